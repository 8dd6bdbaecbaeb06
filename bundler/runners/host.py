"""The host runner: the current interpreter, for debugging and managed environments; drift is refused or recorded."""

from __future__ import annotations

import sys
import time
from importlib import metadata
from pathlib import Path

from bundler.bundle.bag import RECIPE
from bundler.bundle.lockfile import canonical_name
from bundler.errors import InputError
from bundler.runners.launch import RunRequest, discard, finish_run, runtime_env, staging_dir, stream_runtime


def lock_drift(lock_text: str) -> list[dict[str, str | None]]:
    """Compare `name==version` pins in a lock with what this interpreter has installed."""
    installed: dict[str, str] = {}
    # First on sys.path wins, as for import: a venv made with --system-site-packages lists both copies.
    for dist in metadata.distributions():
        if dist.metadata["Name"]:
            installed.setdefault(canonical_name(dist.metadata["Name"]), dist.version)
    drift = []
    for raw in lock_text.splitlines():
        line = raw.split("#", 1)[0].strip().rstrip("\\").strip()
        if "==" not in line or line.startswith("-"):
            continue
        name, _, version = line.partition("==")
        name = canonical_name(name.split("[")[0].strip())
        version = version.split(";")[0].split()[0].strip()
        have = installed.get(name)
        if have != version:
            drift.append({"package": name, "locked": version, "installed": have})
    return drift


def host_invocation(request: RunRequest, out: Path) -> tuple[list[str], dict[str, str]]:
    """The command and environment the host runner starts the runtime with (the container mirrors them)."""
    recipe = request.bundle / RECIPE
    env = runtime_env("host", request)
    env["PYTHONPATH"] = str(recipe)
    return [sys.executable, "-m", "runtime", str(recipe), str(out)], env


def checked_drift(lock_text: str, allow_drift: bool, action: str = "run") -> list[dict[str, str | None]]:
    """The drift from the lock; refused (exit 2) unless allow_drift, in which case it is returned to be recorded."""
    drift = lock_drift(lock_text)
    if drift and not allow_drift:
        shown = ", ".join(f"{d['package']} {d['installed'] or 'missing'} (lock {d['locked']})" for d in drift[:6])
        raise InputError(
            f"this interpreter differs from the lock in {len(drift)} package(s): {shown}",
            f"use --runner venv for the locked environment, or --allow-drift to {action} anyway (recorded)",
        )
    return drift


def run_host(request: RunRequest) -> str:
    recipe = request.bundle / RECIPE
    drift = checked_drift((recipe / "requirements.lock").read_text(encoding="utf-8"), request.allow_drift)
    staged = staging_dir(request.bundle)
    started = time.time()
    try:
        command, env = host_invocation(request, staged)
        stream_runtime(command, env, staged, "training")
        return finish_run(request, staged, "host", started, {"allow_drift": request.allow_drift, "drift": drift})
    except BaseException:
        discard(staged)
        raise
