"""One typed view of a finished bundle's records, used by audit and publish alike.

`RecipeView` is data/recipe/ with config.toml parsed once: the seeds, the hyperparameters and the
determinism flag are read here and nowhere else. `RunView` is one data/runs/<id>/: results, metrics,
env and run records. Both cope with older bundles that lack a file (it reads as {}); a bundle's
readers never need the stages that wrote it, so this module imports only bundle/ and errors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from bundler.bundle.bag import RECIPE, RUNS, read_json_object
from bundler.bundle.hashing import canonical_json, manifest_lines, sha256_bytes
from bundler.errors import InputError
from bundler.runtime.contract import DETERMINISM_ENV


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


def hardware_digest(env: Mapping[str, Any]) -> str:
    """16 hex digits naming the hardware a run used (GPU, CUDA libraries, CPU, image): the card's fingerprint."""
    gpu = env.get("gpu")
    cuda = env.get("cuda") or {}
    cpu = env.get("cpu") or {}
    fingerprint = {
        "gpu": {k: gpu.get(k) for k in ("name", "count", "sm_count", "compute_capability")} if gpu else None,
        "cuda": {k: cuda.get(k) for k in ("runtime", "cudnn", "cublas")} if cuda else None,
        "cpu": cpu.get("machine"),
        "image_digest": env.get("image_digest"),
    }
    return sha256_bytes(canonical_json(fingerprint).encode())[:16]


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
    # The runtime contract fixes these; older env.json files did not record them.
    return recorded or dict(DETERMINISM_ENV)


# Every seed of a resolved config: (name, dotted key in config.toml).
SEEDS = (
    ("project", "project.seed"),
    ("split", "split.seed"),
    ("train", "train.seed"),
    ("lora_init", "lora.init_seed"),
    ("model_tiny", "model.tiny.seed"),
)
# The sections whose keys are the fine-tune's hyperparameters.
HYPERPARAMETER_SECTIONS = ("train", "lora")


@dataclass(frozen=True)
class RecipeView:
    """A bundle's data/recipe/ with its config.toml parsed once ({} when absent or unreadable)."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, bundle: Path) -> RecipeView:
        return cls.at(bundle / RECIPE)

    @classmethod
    def at(cls, recipe: Path) -> RecipeView:
        try:
            config = tomllib.loads((recipe / "config.toml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            config = {}
        return cls(recipe, config)

    def value(self, dotted: str) -> Any:
        """config.toml's value at "section.key" (or "section.sub.key"); None when absent."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node

    def seeds(self, *, with_model: bool = False) -> dict[str, Any]:
        """{project, split, train, lora_init} (and model_tiny) -> seed; None where not recorded."""
        return {name: self.value(key) for name, key in SEEDS if with_model or name != "model_tiny"}

    def recorded_seeds(self) -> dict[str, Any]:
        """Dotted config key -> seed, for every seed the config records (the provenance statement's form)."""
        return {key: value for _, key in SEEDS if (value := self.value(key)) is not None}

    def hyperparameters(self) -> list[tuple[str, Any]]:
        """("train.<key>" / "lora.<key>", value), sorted within each section."""
        rows = []
        for section in HYPERPARAMETER_SECTIONS:
            table = self.config.get(section)
            for key, value in sorted((table if isinstance(table, dict) else {}).items()):
                rows.append((f"{section}.{key}", value))
        return rows

    @property
    def deterministic(self) -> bool:
        """[train] deterministic; a recipe that does not say is deterministic (the default)."""
        flag = self.value("train.deterministic")
        return True if flag is None else bool(flag)

    def record(self, name: str) -> dict[str, Any]:
        """One of the recipe's JSON records (model.json, splits.json ...), {} when absent or unreadable."""
        return read_json_object(self.path / name)


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

    @property
    def published(self) -> dict[str, Any] | None:
        """publish.json, written by `bundler push`; None before a push."""
        return read_json_object(self.path / "publish.json") or None

    @classmethod
    def read(cls, run_dir: Path, *, strict: bool = False) -> RunView:
        """Read the run's files once.

        Not strict (card, inspect): a missing or damaged file reads {} and a damaged metrics line is
        skipped. Strict (replay): results.json must exist and damaged JSON is an InputError.
        """
        if strict and not (run_dir / "results.json").is_file():
            raise InputError(
                f"run {run_dir.name[:12]} in {run_dir.parent.parent.parent} has no results.json",
                "pick a finished run with --run",
            )
        read = read_run_json if strict else read_json_object
        return cls(
            run_dir.name,
            run_dir,
            read(run_dir / "results.json"),
            _metrics(run_dir / "metrics.jsonl", strict),
            read(run_dir / "env.json"),
            read(run_dir / "run.json"),
        )


def read_run(bundle: Path, run_id: str) -> RunView:
    """The recorded run `run_id` of `bundle`, strictly (InputError when unfinished or damaged)."""
    return RunView.read(bundle / RUNS / run_id, strict=True)


def read_run_json(path: Path) -> dict[str, Any]:
    """A run file as a dict: {} when missing, InputError when damaged."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}", "the run is damaged; pick another with --run") from None
    return value if isinstance(value, dict) else {}


def _metrics(path: Path, strict: bool) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            if strict:
                raise InputError(
                    f"{path} line {number} is not valid JSON: {exc}", "the run is damaged; pick another with --run"
                ) from None
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
