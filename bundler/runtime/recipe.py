"""Read the recipe files and verify every model and dataset file against its recorded sha256."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from .errors import RecipeInputError
from .specs import DataSpec, LoraSpec, TrainSpec

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Recipe:
    """The parsed recipe: resolved config and the three manifests."""

    root: Path
    config: dict[str, Any]
    model: dict[str, Any]
    dataset: dict[str, Any]
    splits: dict[str, Any]

    @property
    def train(self) -> TrainSpec:
        return TrainSpec.of(self.config)

    @property
    def lora(self) -> LoraSpec:
        return LoraSpec.of(self.config)

    @property
    def data(self) -> DataSpec:
        return DataSpec.of(self.config)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def load_recipe(root: Path) -> Recipe:
    """Load config.toml, model.json, dataset.json and splits.json from the recipe directory."""
    missing = [n for n in ("config.toml", "model.json", "dataset.json", "splits.json") if not (root / n).is_file()]
    if missing:
        raise RecipeInputError(
            f"recipe {root} lacks {', '.join(missing)}",
            "pass the bundle's data/recipe directory; `bundler verify` shows what is missing",
        )
    try:
        config = tomllib.loads((root / "config.toml").read_text(encoding="utf-8"))
        manifests = [
            json.loads((root / n).read_text(encoding="utf-8")) for n in ("model.json", "dataset.json", "splits.json")
        ]
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise RecipeInputError(
            f"recipe {root} has an unreadable file: {exc}",
            "rebuild the bundle; recipe files are written by `bundler build`",
        ) from None
    return Recipe(root, config, *manifests)


def verify_files(kind: str, base: Path, expected: dict[str, str]) -> None:
    """Check that every file named in a manifest exists under `base` with the recorded sha256."""
    problems = []
    for rel in sorted(expected):
        path = base / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif (found := sha256_file(path)) != expected[rel]:
            problems.append(f"{rel}: sha256 {found[:12]}, recorded {expected[rel][:12]}")
    if not expected:
        problems.append("the manifest lists no files")
    if problems:
        raise RecipeInputError(
            f"{kind} files under {base} do not match the recipe: " + "; ".join(problems),
            f"mount the exact {kind} snapshot the bundle recorded ({kind}.json); a changed file means a different run",
            kind="hash",
        )
