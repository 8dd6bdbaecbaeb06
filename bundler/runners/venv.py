"""The venv runner: the lock installed into a virtual environment cached by lock hash, the runtime in a child."""

from __future__ import annotations

import time

from bundler.bundle.bag import RECIPE
from bundler.bundle.hashing import sha256_file
from bundler.recipe.lockenv import ensure_venv, venv_python
from bundler.runners.launch import RunRequest, discard, finish_run, runtime_env, staging_dir, stream_runtime


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
