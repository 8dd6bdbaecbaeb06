"""One typed view of a finished bundle's records, used by audit and publish alike."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from bundler.bundle.bag import RUNS
from bundler.bundle.hashing import manifest_lines, sha256_bytes
from bundler.errors import InputError


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


@dataclass
class RunView:
    """The files of one recorded run (results.json, metrics.jsonl, env.json, run.json), read once."""

    run_id: str
    path: Path
    results: dict[str, Any]
    metrics: list[dict[str, Any]]
    env: dict[str, Any]
    record: dict[str, Any]

    @property
    def steps(self) -> dict[int, dict[str, Any]]:
        return {m["step"]: m for m in self.metrics if isinstance(m.get("step"), int) and "split" not in m}

    @property
    def evals(self) -> dict[int, float]:
        return {
            m["step"]: float(m["eval_loss"])
            for m in self.metrics
            if m.get("split") == "val" and isinstance(m.get("eval_loss"), (int, float))
        }


def read_run_json(path: Path) -> dict[str, Any]:
    """A run file as a dict: {} when missing, InputError when damaged."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}", "the run is damaged; pick another with --run") from None
    return value if isinstance(value, dict) else {}


def read_run(bundle: Path, run_id: str) -> RunView:
    """Read a run's results.json, metrics.jsonl, env.json and run.json."""
    path = bundle / RUNS / run_id
    if not (path / "results.json").is_file():
        raise InputError(f"run {run_id[:12]} in {bundle} has no results.json", "pick a finished run with --run")
    metrics = []
    metrics_path = path / "metrics.jsonl"
    if metrics_path.is_file():
        for line in metrics_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                metrics.append(json.loads(line))
    return RunView(
        run_id,
        path,
        read_run_json(path / "results.json"),
        metrics,
        read_run_json(path / "env.json"),
        read_run_json(path / "run.json"),
    )
