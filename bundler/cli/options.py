"""Shared options and the error edge of every command: turn errors into two lines and an exit code.

Results go to stdout (`--json`: one object with a `schema` key); logs and progress go to stderr.
Exit codes: 0 ok, 1 a check failed, 2 usage, config or input error. Nothing here imports torch.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
RUNNER_CHOICE = click.Choice(["auto", "docker", "venv", "host"])


def emit(result: dict[str, Any], as_json: bool, text: str) -> None:
    """Print the result: one JSON object, or `text` for a person."""
    click.echo(json.dumps(result, sort_keys=True) if as_json else text)


def _fail(message: str, hint: str, code: int) -> None:
    plain = "NO_COLOR" in os.environ or not sys.stderr.isatty()
    first, _, rest = message.partition("\n")
    click.echo(("error: " if plain else "\x1b[31merror:\x1b[0m ") + first, err=True)
    if rest:
        click.echo(rest, err=True)
    if hint:
        click.echo(("hint: " if plain else "\x1b[36mhint:\x1b[0m ") + hint, err=True)
    sys.exit(code)


def _raise_terminated(signum: int, frame: object) -> None:
    from bundler.errors import Terminated

    raise Terminated(signum)


def _unwind_on_sigterm() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C: runtime children are ended and partial outputs removed.

    Python's default for SIGTERM is to die at once, which left the runtime child training on.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _raise_terminated)


def handles_errors(func: F) -> F:
    """Map BundlerError (and the unexpected) to a message, a next step and the documented exit code.

    What the machine refuses (OSError: disk full, read-only, permission) and running out of memory are
    input-or-machine errors (exit 2) with a next step, never "internal error".
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from bundler.errors import EXIT_INPUT, BundlerError, MachineError, ResourceExhaustedError, Terminated

        _unwind_on_sigterm()
        try:
            return func(*args, **kwargs)
        except BundlerError as exc:
            if os.environ.get("BUNDLER_DEBUG"):
                traceback.print_exc()
            _fail(str(exc), exc.hint, exc.exit_code)
        except OSError as exc:
            if os.environ.get("BUNDLER_DEBUG"):
                traceback.print_exc()
            error = MachineError.from_os_error(exc)
            _fail(str(error), error.hint, error.exit_code)
        except MemoryError:
            error = ResourceExhaustedError(
                "bundler ran out of memory", ["train.batch_size", "train.max_seq_len", "the dataset size"]
            )
            _fail(str(error), error.hint, error.exit_code)
        except Terminated as exc:
            _fail(f"terminated by signal {exc.signum}; nothing was written under the final name", "", 128 + exc.signum)
        except KeyboardInterrupt:
            _fail("interrupted; nothing was written under the final name", "", 130)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place that turns a crash into a message
            if os.environ.get("BUNDLER_DEBUG"):
                traceback.print_exc()
            _fail(
                f"internal error: {type(exc).__name__}: {exc}",
                "rerun with BUNDLER_DEBUG=1 for the traceback and report it",
                EXIT_INPUT,
            )

    return wrapper  # type: ignore[return-value]


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
allow_tag_option = click.option(
    "--allow-tag",
    is_flag=True,
    help="Accept an oci:// reference by tag alone (resolved to a digest, which is printed); default: digest only.",
)


def resolved_path(**kwargs: Any) -> click.Path:
    """A click path made absolute once, here at the edge: children run elsewhere and must not re-resolve it."""
    return click.Path(path_type=Path, resolve_path=True, **kwargs)
