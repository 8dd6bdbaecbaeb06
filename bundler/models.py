"""The base model snapshot: where it comes from, its files' sha256 (model.json), and the tiny offline model."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bundler import ui
from bundler.config import BundleConfig
from bundler.errors import InputError
from bundler.hashing import canonical_json, hash_tree, sha256_bytes
from bundler.runners import cache_dir


def tiny_model_dir(config: BundleConfig, lock_sha256: str) -> Path:
    """Cache folder of the tiny model: keyed by its config, seed and the locked library versions."""
    key = sha256_bytes((canonical_json(config.model.tiny.model_dump()) + lock_sha256).encode())
    return cache_dir() / "models" / f"tiny-{key[:24]}"


def materialize_tiny(config: BundleConfig, lock: Path, lock_sha256: str, use_host: bool) -> Path:
    """Build the tiny Llama-shaped model (fixed seed, CPU, float32) in the locked environment, once."""
    target = tiny_model_dir(config, lock_sha256)
    if (target / "config.json").is_file():
        return target
    ui.stage("making the tiny base model from its config (fixed seed; cached)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        args = ["runtime.tiny", str(tmp / "model"), json.dumps(config.model.tiny.model_dump(), sort_keys=True)]
        # Only the runtime goes on the path: bundler's own modules (e.g. inspect.py) would shadow the stdlib.
        package_dir = tmp / "pythonpath"
        from bundler.runners import runtime_source

        shutil.copytree(runtime_source(), package_dir / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
        if use_host:
            import subprocess

            env = {**os.environ, "PYTHONPATH": str(package_dir), "PYTHONHASHSEED": "0"}
            subprocess.run([sys.executable, "-m", *args], env=env, check=True, capture_output=True)
        else:
            from bundler.runners.venv import run_module

            run_module(lock, args, package_dir)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp / "model", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(config: BundleConfig, project: Path, lock: Path, lock_sha256: str, use_host: bool) -> tuple[Path, dict]:
    """Return the model snapshot directory and the model.json record (the sha256 of every file it loads)."""
    model = config.model
    if model.source == "tiny":
        directory = materialize_tiny(config, lock, lock_sha256, use_host)
    elif model.source == "local":
        directory = (project / (model.path or "")).resolve()
        if not (directory / "config.json").is_file():
            raise InputError(f"model path {directory} has no config.json", "point [model] path at a saved model directory")
    else:
        raise InputError(
            f"[model] source = 'hub' needs the Hub, which this machine cannot reach (model {model.id})",
            "download the snapshot once and use source = 'local' with its path",
        )
    files = {p: s for p, s in hash_tree(directory).items() if not p.startswith(".")}
    record = {
        "schema": "bundler.model/1",
        "source": model.source,
        "id": model.id,
        "revision": model.revision,
        "tiny": model.tiny.model_dump() if model.source == "tiny" else None,
        "files": files,
    }
    return directory, record
