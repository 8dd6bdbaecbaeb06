"""The venv runner: the lock installed into a virtual environment cached by lock hash, the runtime in a child."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bundler import ui
from bundler.bundle import RECIPE
from bundler.errors import EnvironmentSetupError
from bundler.hashing import sha256_file
from bundler.runners import RunRequest, cache_dir, discard, finish_run, runtime_env, staging_dir, stream_runtime


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


def run_venv(request: RunRequest) -> str:
    """Run the bundle's runtime in the locked venv; return the run ID."""
    recipe = request.bundle / RECIPE
    venv = ensure_venv(recipe / "requirements.lock")
    staged = staging_dir(request.bundle)
    started = time.time()
    try:
        env = runtime_env("venv", request)
        env["PYTHONPATH"] = str(recipe)
        stream_runtime([str(venv_python(venv)), "-m", "runtime", str(recipe), str(staged)], env, staged, "training")
        details = {"environment": {"venv_lock_sha256": sha256_file(recipe / "requirements.lock")}}
        return finish_run(request, staged, "venv", started, details)
    except BaseException:
        discard(staged)
        raise


def run_module(lock: Path, module_args: list[str], pythonpath: Path) -> None:
    """Run `python -m <module_args>` in the locked venv (used to materialise the tiny model)."""
    venv = ensure_venv(lock)
    env = {**os.environ, **{"PYTHONPATH": str(pythonpath), "PYTHONHASHSEED": "0"}}
    result = subprocess.run([str(venv_python(venv)), "-m", *module_args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise EnvironmentSetupError(
            f"`python -m {' '.join(module_args[:1])}` failed in the locked venv:\n{result.stderr[-2000:]}"
        )
