"""One typed view of a finished bundle's records, used by audit and publish alike."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomllib

from bundler.bundle.hashing import manifest_lines, sha256_bytes


def hardware_fingerprint(env: dict[str, Any] | None) -> dict[str, Any]:
    """The fields that decide whether bitwise reproduction is expected (shared with replay)."""
    env = env or {}
    gpu = env.get("gpu") or {}
    libraries = env.get("libraries") or {}
    return {
        "runner": env.get("runner"),
        "device": gpu.get("name") or "cpu",
        "sm_count": gpu.get("sm_count"),
        "compute_capability": gpu.get("compute_capability"),
        "driver": gpu.get("driver"),
        "cuda": env.get("cuda"),
        "cpu": env.get("cpu"),
        "python": env.get("python"),
        "torch": libraries.get("torch"),
        "transformers": libraries.get("transformers"),
        "peft": libraries.get("peft"),
        "image_digest": env.get("image_digest") or None,
    }


def runtime_digest(runtime_hashes: Mapping[str, str]) -> str:
    """sha256 of the runtime directory's manifest lines: the trainer's identity."""
    return sha256_bytes(manifest_lines(runtime_hashes).encode("utf-8"))


def determinism_variables(env: Mapping[str, Any]) -> dict[str, str]:
    """The environment variables set before the interpreter started (env.json records them as env.NAME)."""
    recorded = {
        key.removeprefix("env."): str(entry.get("value"))
        for key, entry in (env.get("determinism") or {}).items()
        if key.startswith("env.") and isinstance(entry, dict)
    }
    # The runtime contract (design.md section 5) fixes these; older env.json files did not record them.
    return recorded or {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", "PYTHONHASHSEED": "0"}


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
