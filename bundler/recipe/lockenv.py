"""The locked environment: requirements.lock installed into a venv cached by the lock's hash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bundler import ui
from bundler.bundle.hashing import sha256_file
from bundler.errors import EnvironmentSetupError, ResourceExhaustedError
from bundler.paths import cache_dir


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(lock: Path) -> Path:
    """Return a venv holding exactly the lock's distributions; build it once per lock hash."""
    lock_sha = sha256_file(lock)
    venv = cache_dir() / "venvs" / lock_sha[:24]
    if (venv / ".complete").is_file():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    ui.stage(f"installing the lock into a cached venv ({lock_sha[:12]}; once per lock)")
    tmp = Path(tempfile.mkdtemp(prefix=".venv-", dir=venv.parent))
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(tmp)], check=True, capture_output=True)
        # --require-hashes --no-deps: exactly the pinned set, every file checked against the lock.
        install = subprocess.run(
            [
                str(venv_python(tmp)),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--require-hashes",
                "--no-deps",
                "--only-binary=:all:",
                "-r",
                str(lock),
            ],
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            raise EnvironmentSetupError(
                f"installing {lock.name} into a venv failed:\n{install.stderr.strip()[-2000:]}",
                "check that every package in the lock has a wheel for this platform, or run `bundler lock` again",
            )
        (tmp / ".complete").write_text(lock_sha + "\n")
        if venv.exists():
            shutil.rmtree(venv)
        os.rename(tmp, venv)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return venv


_OOM_MARKERS = ("MemoryError", "OutOfMemoryError", "out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(code: int, tail: list[str]) -> bool:
    """A child killed by SIGKILL (the OOM killer; 137 from a shell) or one that reported running out of memory."""
    return code in (-9, 137) or any(marker in line for line in tail[-15:] for marker in _OOM_MARKERS)


def run_module(lock: Path, module_args: list[str], pythonpath: Path, knobs: list[str] | None = None) -> None:
    """Run `python -m <module_args>` in the locked venv (used to materialise the tiny model).

    A child that runs out of memory is ResourceExhaustedError naming `knobs`, not its traceback.
    """
    _run_python(str(venv_python(ensure_venv(lock))), module_args, pythonpath, knobs)


def run_module_here(module_args: list[str], pythonpath: Path, knobs: list[str] | None = None) -> None:
    """run_module with this interpreter (the host runner)."""
    import sys

    _run_python(sys.executable, module_args, pythonpath, knobs)


def _run_python(python: str, module_args: list[str], pythonpath: Path, knobs: list[str] | None) -> None:
    env = {**os.environ, **{"PYTHONPATH": str(pythonpath), "PYTHONHASHSEED": "0"}}
    command = [python, "-m", *module_args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, errors="replace")
    if result.returncode != 0 and knobs and is_out_of_memory(result.returncode, result.stderr.splitlines()):
        raise ResourceExhaustedError(f"`python -m {module_args[0]}` ran out of memory", knobs)
    if result.returncode != 0:
        raise EnvironmentSetupError(
            f"`python -m {' '.join(module_args[:1])}` failed in the locked venv:\n{result.stderr[-2000:]}"
        )
