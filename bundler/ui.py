"""Human output on stderr: stage lines, warnings, a step progress bar. Results go to stdout elsewhere."""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def console() -> Any:
    from rich.console import Console

    return Console(stderr=True, no_color="NO_COLOR" in os.environ, highlight=False)


def is_interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def stage(message: str) -> None:
    """One progress line per stage of a build."""
    console().print(f"[bold cyan]•[/] {message}")


def info(message: str) -> None:
    console().print(f"  {message}", style="dim")


def warn(message: str) -> None:
    console().print(f"[yellow]warning:[/] {message}")


class StepProgress:
    """A progress bar over training steps when stderr is a terminal; sparse plain lines otherwise."""

    def __init__(self, label: str):
        self.label = label
        self._bar: Any = None
        self._task: Any = None
        self._last_logged = 0

    def __enter__(self) -> StepProgress:
        if is_interactive():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[loss]}"),
                TimeElapsedColumn(),
                console=console(),
                transient=True,
            )
            self._bar.__enter__()
        return self

    def update(self, step: int, total: int, loss: float | None) -> None:
        text = f"loss {loss:.4f}" if loss is not None else ""
        if self._bar is not None:
            if self._task is None:
                self._task = self._bar.add_task(self.label, total=total, loss=text)
            self._bar.update(self._task, completed=step, loss=text)
        elif step == total or step - self._last_logged >= max(1, total // 5):
            self._last_logged = step
            info(f"step {step}/{total} {text}")

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
