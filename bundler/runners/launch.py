"""Runners execute the bundle's runtime in an environment: docker (image), venv (locked venv), host.

All of them share the contract of docs/design.md section 9: the same command, environment variables and
output files; only where the interpreter comes from differs.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bundler import ui
from bundler.bundle import bag as bundle_format
from bundler.bundle.hashing import canonical_json
from bundler.errors import InputError, MachineError, OutputNotWritableError, ResourceExhaustedError, TrainingError
from bundler.recipe.lockenv import is_out_of_memory
from bundler.runtime.contract import DETERMINISM_ENV, ERROR_PREFIX, EVENT_PREFIX
from bundler.runtime.tracking import TRACKER_ENV

RUNNERS = ("auto", "docker", "venv", "host")
RUN_RECORD_SCHEMA = "bundler.run/1"  # run.json, written beside every run's outputs


@dataclass
class RunRequest:
    """What a runner needs to execute one run of a bundle."""

    bundle: Path
    model_dir: Path
    data_dir: Path
    max_steps: int | None = None
    allow_drift: bool = False
    gpus: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
    tracking: dict[str, object] | None = None  # [tracking] of the build; never part of the recipe
    processes: int | None = None  # overrides [train] num_processes; None: the recipe's value

    def __post_init__(self) -> None:
        # The runtime starts in its own directory: a relative path (`bundler replay b`) would point elsewhere there.
        self.bundle = Path(self.bundle).absolute()
        self.model_dir = Path(self.model_dir).absolute()
        self.data_dir = Path(self.data_dir).absolute()

    def process_override(self, runner: str) -> int | None:
        """Processes to launch instead of the recipe's: --processes, else (docker) --gpus N, one process a GPU."""
        if self.processes is not None:
            return self.processes
        if runner == "docker" and self.gpus and self.gpus.strip().isdigit() and int(self.gpus) > 0:
            return int(self.gpus)
        return None


def runtime_env(runner: str, request: RunRequest, image_digest: str = "") -> dict[str, str]:
    """The environment the runtime starts with; nothing from the caller's environment leaks in but PATH/HOME."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "BUNDLER_RUNNER": runner,
        "BUNDLER_IMAGE_DIGEST": image_digest,
        "BUNDLER_MODEL_DIR": str(request.model_dir),
        "BUNDLER_DATA_DIR": str(request.data_dir),
        **DETERMINISM_ENV,
    }
    if request.max_steps:
        env["BUNDLER_MAX_STEPS"] = str(request.max_steps)
    if (processes := request.process_override(runner)) is not None:
        env["BUNDLER_NUM_PROCESSES"] = str(processes)  # > 1: the runtime re-launches itself with accelerate
    if request.tracking:
        env["BUNDLER_TRACKING"] = json.dumps(request.tracking, sort_keys=True)

    for name in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS", *TRACKER_ENV):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


class RuntimeLog:
    """The runtime's output, line by line: events drive the progress bar, BUNDLER_ERROR becomes a bundler error.

    Every runner feeds its child's (or container's) lines through one of these, so a step, an input error
    and a crash read the same whichever runner ran it.
    """

    def __init__(self, progress: object) -> None:
        self.progress = progress
        self.tail: list[str] = []
        self.error: dict[str, str] | None = None

    def feed(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if line.startswith(EVENT_PREFIX):
            try:
                event = json.loads(line[len(EVENT_PREFIX) :])
            except ValueError:
                event = {}
            if event.get("event") == "step":
                self.progress.update(event["step"], event["max_steps"], event.get("loss"))  # type: ignore[attr-defined]
            return
        if line.startswith(ERROR_PREFIX):
            try:
                self.error = json.loads(line[len(ERROR_PREFIX) :])
            except ValueError:
                self.error = {"message": line[len(ERROR_PREFIX) :]}
            return
        self.tail = (self.tail + [line])[-40:]
        if os.environ.get("BUNDLER_DEBUG"):
            ui.info(line)

    def finish(self, code: int) -> None:
        """Raise the bundler error the exit code and the output call for; return on success."""
        if code == 0:
            return
        if self.error is not None:
            raise InputError(self.error.get("message", "the runtime refused its input"), self.error.get("hint", ""))

        if is_out_of_memory(code, self.tail):
            raise ResourceExhaustedError(
                "the runtime ran out of memory" + (" (killed by the kernel)" if code in (-9, 137) else ""),
                MEMORY_KNOBS,
            )
        full = [line for line in self.tail[-15:] if "No space left on device" in line]
        if full:
            raise MachineError("the run's output directory", "ENOSPC", "the runtime ran out of disk space")
        raise TrainingError(
            f"the runtime exited with code {code}; last lines:\n" + "\n".join(self.tail[-15:]), "\n".join(self.tail)
        )


# What to turn down when a run does not fit in memory, in the order that usually helps most.
MEMORY_KNOBS = [
    "train.batch_size",
    "train.max_seq_len",
    "lora.r",
    "the base model (model.tiny.* sizes, or a smaller [model])",
]


class LineSplitter:
    """Turn a stream of byte chunks (container logs arrive in arbitrary pieces) into whole text lines."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[str]:
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines]

    def flush(self) -> list[str]:
        rest, self._pending = self._pending, b""
        return [rest.decode("utf-8", "replace")] if rest else []


def stream_runtime(command: Sequence[str], env: Mapping[str, str], cwd: Path, label: str) -> None:
    """Run the runtime, turn its events into a progress bar and its errors into bundler errors."""

    with ui.StepProgress(label) as progress:
        log = RuntimeLog(progress)
        process = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            process_group=0,  # its own group: ended as one (accelerate's workers too) when the build stops
            preexec_fn=_die_with_parent(),
        )
        assert process.stdout is not None
        try:
            for line in process.stdout:
                log.feed(line)
            code = process.wait()
        except BaseException:
            end_process_group(process)
            raise
    log.finish(code)


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook: the kernel SIGKILLs the child if bundler dies (even by SIGKILL, which runs no cleanup).

    prctl is looked up here, in the parent: the hook runs between fork and exec, where a lookup (dlopen's
    lock, held by another thread at fork time) could deadlock.
    """
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux: SIGTERM and Ctrl-C still end the child through end_process_group
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def end_process_group(process: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """SIGTERM the child's process group, then SIGKILL what is left after 10 s; reap the child."""
    import signal

    for signum, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, signum)
        except (ProcessLookupError, PermissionError):
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(process.pid, signal.SIGKILL)  # grandchildren that outlived the leader
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def staging_dir(bundle: Path) -> Path:
    """A fresh output directory on the bundle's filesystem, outside the bag, renamed into the bag at the end.

    Both the staging place and the bundle's data/ must take writes; a read-only filesystem is refused here,
    before any image is built or step is trained.
    """

    try:
        with tempfile.TemporaryFile(dir=bundle / bundle_format.PAYLOAD):
            pass
        return Path(tempfile.mkdtemp(prefix=f".{bundle.name}.run-", suffix=".partial", dir=bundle.parent))
    except OSError as exc:
        raise OutputNotWritableError(bundle, exc.strerror or str(exc)) from None


def finish_run(request: RunRequest, staged: Path, runner: str, started: float, details: Mapping[str, object]) -> str:
    """Record the staged outputs as a run of the bundle; return the run ID."""
    if not (staged / "results.json").is_file():
        raise TrainingError(f"the runtime finished without writing results.json in {staged}")
    record = {
        "schema": RUN_RECORD_SCHEMA,
        "runner": runner,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": round(time.time() - started, 3),
        "host": {"machine": platform.machine(), "system": platform.system()},
        "max_steps_override": request.max_steps,
        "processes_override": request.process_override(runner),
        **details,
    }
    return bundle_format.add_run(request.bundle, staged, {"run.json": canonical_json(record).encode()})


def discard(staged: Path) -> None:
    shutil.rmtree(staged, ignore_errors=True)
