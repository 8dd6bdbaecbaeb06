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
from bundler.errors import EnvironmentSetupError
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


def run_module(lock: Path, module_args: list[str], pythonpath: Path) -> None:
    """Run `python -m <module_args>` in the locked venv (used to materialise the tiny model)."""
    venv = ensure_venv(lock)
    env = {**os.environ, **{"PYTHONPATH": str(pythonpath), "PYTHONHASHSEED": "0"}}
    result = subprocess.run([str(venv_python(venv)), "-m", *module_args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise EnvironmentSetupError(
            f"`python -m {' '.join(module_args[:1])}` failed in the locked venv:\n{result.stderr[-2000:]}"
        )
