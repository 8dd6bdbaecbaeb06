"""The base model snapshot: where it comes from, its files' sha256 (model.json), and the tiny offline model."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from bundler import hub, ui
from bundler.bundle.atomic import atomic_write_text
from bundler.bundle.hashing import canonical_json, hash_tree, sha256_bytes
from bundler.errors import InputError, ModelLockStaleError
from bundler.paths import cache_dir, runtime_source
from bundler.recipe import gguf
from bundler.recipe.config import BundleConfig
from bundler.recipe.lockenv import run_module, run_module_here


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

        shutil.copytree(runtime_source(), package_dir / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
        knobs = ["model.tiny.hidden_size", "model.tiny.intermediate_size", "model.tiny.vocab_size"]
        if use_host:
            run_module_here(args, package_dir, knobs)
        else:
            run_module(lock, args, package_dir, knobs)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp / "model", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(
    config: BundleConfig, project: Path, lock: Path, lock_sha256: str, use_host: bool
) -> tuple[Path, dict]:
    """Return the model snapshot directory and the model.json record (the sha256 of every file it loads)."""
    model = config.model
    if model.source == "tiny":
        directory = materialize_tiny(config, lock, lock_sha256, use_host)
    elif model.source == "local":
        directory = (project / (model.path or "")).resolve()
        if not (directory / "config.json").is_file():
            raise InputError(
                f"model path {directory} has no config.json", "point [model] path at a saved model directory"
            )
    elif model.source == "gguf":
        record = read_model_lock(project, config)
        gguf.check_lock_matches(record, config, project / MODEL_LOCK)
        return gguf.resolve_gguf(record, project, lock, lock_sha256, use_host)
    else:
        record = read_model_lock(project, config)
        ui.stage(f"fetching {model.id}@{record['commit'][:12]} and checking {len(record['files'])} file(s)")
        return hub_snapshot(record), record
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


# ---------------------------------------------------------------- base models from the Hub

MODEL_LOCK = "model.lock.json"
MODEL_SCHEMA = "bundler.model/1"
# What from_pretrained reads from a repo's top level: configs, tokenizer files, chat templates, weights.
_MODEL_SUFFIXES = (".json", ".model", ".txt", ".tiktoken", ".jinja")
_WEIGHTS = {"safetensors": (".safetensors",), "pickle": (".bin",)}


def select_model_files(paths: list[str]) -> list[str]:
    """Return the repo files a model load reads: top-level configs and tokenizer files, and one weight format.

    safetensors when the repo has them, else PyTorch .bin; subfolders (onnx/, original/, ...), other
    frameworks' weights, README and .gitattributes are never loaded, so they are neither pinned nor fetched.
    """
    top = [p for p in paths if "/" not in p and not p.startswith(".")]
    weights = [p for p in top if p.endswith(_WEIGHTS["safetensors"])]
    weights = weights or [p for p in top if p.endswith(_WEIGHTS["pickle"])]
    return sorted({*weights, *(p for p in top if p.endswith(_MODEL_SUFFIXES))})


def lock_hub_model(config: BundleConfig) -> dict:
    """Resolve [model] revision to a commit and pin the sha256 of every file a load reads (model.lock.json)."""

    model = config.model
    pinned = hub.resolve_revision(model.id, "model", model.revision)
    files = select_model_files(list(pinned.files))
    if "config.json" not in files:
        raise InputError(
            f"{model.id}@{model.revision} has no config.json at its top level (commit {pinned.commit[:12]})",
            "point [model] id at a transformers model repo (one with config.json and weights)",
        )
    return {
        "schema": MODEL_SCHEMA,
        "source": "hub",
        "id": model.id,
        "revision": model.revision,
        "commit": pinned.commit,
        "tiny": None,
        "files": hub.pinned_sha256(pinned, files),
    }


def pins_model(config: BundleConfig) -> bool:
    """Whether `bundler lock` writes model.lock.json for this [model] source."""
    return config.model.source in ("hub", "gguf")


def pin_summary(record: dict) -> str:
    """One line naming what model.lock.json pins (for `bundler lock` output)."""
    if record.get("source") == "gguf":
        pinned = record["gguf"]
        where = f"{pinned['distribution']} {pinned['version']}" if "distribution" in pinned else pinned["path"]
        return f"{record['id']} as {pinned.get('file', pinned.get('path'))} (sha256 {pinned['sha256'][:12]}, {where})"
    return f"{record['id']}@{record['commit']}"


def write_model_lock(project: Path, config: BundleConfig, *, offline: bool = False) -> tuple[Path, dict]:
    """Write <project>/model.lock.json for a Hub or GGUF model; offline, keep a Hub pin there if it still matches."""

    path = project / MODEL_LOCK
    if config.model.source == "gguf":
        record = gguf.lock_gguf(config, project)  # the file is local: pinning it needs no network
        atomic_write_text(path, canonical_json(record))
        return path, record
    if offline:
        return path, read_model_lock(project, config)
    record = lock_hub_model(config)
    atomic_write_text(path, canonical_json(record))
    return path, record


def read_model_lock(project: Path, config: BundleConfig) -> dict:
    """Read model.lock.json and check it pins the model bundle.toml names (else ModelLockStaleError, exit 1)."""

    path = project / MODEL_LOCK
    if not path.is_file():
        raise InputError(
            f"[model] source = {config.model.source!r} needs {path}, which pins the model's files and their hashes",
            "run `bundler lock` (it needs the Hub once) and commit model.lock.json",
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}", "run `bundler lock` to write it again") from None
    is_record = isinstance(record, dict) and record.get("schema") == MODEL_SCHEMA
    pins = "gguf" if config.model.source == "gguf" else "files"
    if not is_record or not isinstance(record.get(pins), dict) or record.get("source", "hub") != config.model.source:
        raise InputError(f"{path} is not a {MODEL_SCHEMA} record", "run `bundler lock` to write it again")
    for field in ("id", "revision"):
        configured = getattr(config.model, field)
        if record.get(field) != configured:
            raise ModelLockStaleError(path, field, record.get(field), configured)
    return record


def hub_snapshot(record: dict) -> Path:
    """Return the cached snapshot of a locked Hub model, downloading it at the pinned commit if needed.

    Every file is checked against the sha256 the lock recorded (HubFileMismatchError, exit 2, names them).
    `bundler build` and `bundler run` (for a bundle whose model.json has source "hub") both come here.
    """

    cached = hub.snapshot_dir(record["id"], "model", record["commit"])
    if cached.is_dir() and not hub.verify_files(cached, record["files"]):
        return cached  # no Hub needed: every file is there and matches the lock
    pinned = hub.resolve_revision(record["id"], "model", record["commit"])
    directory, _ = hub.fetch_files(pinned, record["files"], record["files"])
    return directory
