"""The facts compliance documents are made of, each traced to the bundle file it was read from and its sha256.

A `Fact` is a value plus its sources. Nothing is invented: a fact the bundle does not hold reads
NOT_RECORDED, and a fact only a person can supply (intended purpose, risk management, human oversight)
reads TO_COMPLETE. Every source is a bag-relative path whose sha256 comes from the verified manifest,
so an auditor can check each field against the file it came from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.bundle.bag import RECIPE, RUNS, VENDOR, payload_hashes, read_bag_info, read_json_object
from bundler.bundle.hashing import sha256_file
from bundler.bundle.lockfile import LockedRequirement, parse_lock_text
from bundler.errors import InputError
from bundler.publish.card import is_local_path
from bundler.records import RecipeView, RunView

NOT_RECORDED = "not recorded in this bundle"
TO_COMPLETE = "TO BE COMPLETED by the provider (bundler cannot know this)"
HOST_PATH = "a local path (host paths never enter compliance documents)"


@dataclass(frozen=True)
class Source:
    """A file of the bundle and its sha256 as the verified manifests record it."""

    path: str
    sha256: str


@dataclass(frozen=True)
class Fact:
    """One field of a document: its value and where it came from; `status` is recorded, missing or to-complete."""

    label: str
    value: Any
    sources: tuple[Source, ...] = ()
    status: str = "recorded"

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "value": self.value,
            "status": self.status,
            "sources": [{"path": s.path, "sha256": s.sha256} for s in self.sources],
        }


@dataclass
class Evidence:
    """A verified bundle's records for one run, read once, with the sha256 of every file they came from."""

    bundle: Path
    run_id: str
    hashes: dict[str, str]
    bag_info: dict[str, str]
    config: dict[str, Any]
    model: dict[str, Any]
    dataset: dict[str, Any]
    splits: dict[str, Any]
    source: dict[str, Any]
    image: dict[str, Any]
    pins: list[LockedRequirement]
    results: dict[str, Any]
    env: dict[str, Any]
    run: dict[str, Any]
    metrics: list[dict[str, Any]]
    publish: dict[str, Any]
    view: RecipeView = field(default_factory=lambda: RecipeView(Path()))
    tag_hashes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, bundle: Path, run_id: str) -> Evidence:
        recipe, run_dir = bundle / RECIPE, bundle / RUNS / run_id
        lock = recipe / "requirements.lock"
        # Tag files (bag-info.txt, provenance/ with its signature directories) as they are now: verify has just
        # checked them against the tag manifest (which does not list itself) or, signatures, by their keys.
        tags = {
            p.relative_to(bundle).as_posix(): sha256_file(p)
            for p in sorted(bundle.iterdir()) + sorted((bundle / "provenance").rglob("*"))
            if p.is_file() and not p.is_symlink()
        }
        view, run = RecipeView.at(recipe), RunView.read(run_dir)
        return cls(
            bundle=bundle,
            run_id=run_id,
            hashes=payload_hashes(bundle),
            bag_info=read_bag_info(bundle),
            config=view.config,
            model=read_json_object(recipe / "model.json"),
            dataset=read_json_object(recipe / "dataset.json"),
            splits=read_json_object(recipe / "splits.json"),
            source=read_json_object(recipe / "source.json"),
            image=read_json_object(recipe / "image.lock.json"),
            pins=_pins(lock),
            results=run.results,
            env=run.env,
            run=run.record,
            metrics=run.metrics,
            publish=run.published or {},
            view=view,
            tag_hashes=tags,
        )

    # --- where facts come from ---

    def recipe(self, name: str) -> str:
        return f"{RECIPE}/{name}"

    def run_file(self, name: str) -> str:
        return f"{RUNS}/{self.run_id}/{name}"

    def src(self, *paths: str) -> tuple[Source, ...]:
        """Sources for the given bag-relative paths that the bundle holds (payload or provenance)."""
        found = []
        for path in paths:
            sha = self.hashes.get(path) or self.tag_hashes.get(path)
            if sha:
                found.append(Source(path, sha))
        return tuple(found)

    def fact(self, label: str, value: Any, *paths: str) -> Fact:
        """A recorded fact from `paths`, or a NOT_RECORDED one when the value is absent."""
        if value is None or value == "" or value == [] or value == {}:
            return Fact(label, NOT_RECORDED, (), "missing")
        return Fact(label, without_host_paths(value), self.src(*paths))

    def config_value(self, section: str, key: str) -> Any:
        value = as_map(self.config.get(section)).get(key)
        return value

    def vendored_dataset_files(self) -> dict[str, str]:
        """{file name: bag path} of the dataset files vendored in the bundle."""
        prefix = f"{VENDOR}/dataset/"
        return {p[len(prefix) :]: p for p in sorted(self.hashes) if p.startswith(prefix)}

    def adapter_parameters(self) -> int | None:
        """Trainable parameters of the adapter, from the safetensors header (no torch needed)."""
        path = self.bundle / self.run_file("adapter/adapter_model.safetensors")
        try:
            return safetensors_parameter_count(path)
        except (OSError, ValueError):
            return None


def as_map(value: Any) -> dict[str, Any]:
    """`value` when it is a mapping, else {}: records of older or hand-made bundles may hold other shapes."""
    return value if isinstance(value, dict) else {}


def without_host_paths(value: Any) -> Any:
    """`value` with every string that looks like a local filesystem path replaced by HOST_PATH."""
    if isinstance(value, str):
        return HOST_PATH if is_local_path(value) else value
    if isinstance(value, dict):
        return {k: without_host_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_host_paths(v) for v in value]
    return value


def safetensors_parameter_count(path: Path) -> int:
    """Sum of the element counts of every tensor in a safetensors file, read from its JSON header."""
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        # The header of an adapter is a few KB; a huge length means this is not a safetensors file.
        if size <= 0 or size > 64 * 1024 * 1024:
            raise ValueError(f"{path}: not a safetensors header")
        header = json.loads(handle.read(size))
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in entry["shape"]:
            count *= int(dim)
        total += count
    return total


def llama_parameter_count(arch: Mapping[str, Any]) -> int | None:
    """Parameters of a Llama-shaped decoder from its config (embeddings, attention, MLP, norms, head)."""
    try:
        h, layers = int(arch["hidden_size"]), int(arch["num_hidden_layers"])
        inter, vocab = int(arch["intermediate_size"]), int(arch["vocab_size"])
        heads = int(arch["num_attention_heads"])
        kv = int(arch.get("num_key_value_heads") or heads)
    except (KeyError, TypeError, ValueError):
        return None
    head_dim = h // heads
    attention = h * h * 2 + h * kv * head_dim * 2
    mlp = 3 * h * inter
    per_layer = attention + mlp + 2 * h
    tied = bool(arch.get("tie_word_embeddings", False))
    return vocab * h * (1 if tied else 2) + layers * per_layer + h


def _pins(lock: Path) -> list[LockedRequirement]:
    try:
        return parse_lock_text(lock.read_text(encoding="utf-8"), lock.name)
    except (OSError, UnicodeDecodeError, InputError):
        return []
