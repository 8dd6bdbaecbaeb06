"""splits.json on disk: write it, read it back, select the examples it names, summarise it, and
check any manifest for leakage between splits (examples whose normalised text straddles splits).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler import ui
from bundler.errors import DatasetChangedError, SplitError
from bundler.recipe.assign import DROPPED, SPLITS, content_hash, example_id_of, field_text, normalize_text, text_key
from bundler.recipe.config import BundleConfig
from bundler.recipe.datasource import load_records

SCHEMA = "bundler.splits/1"
SUMMARY_SCHEMA = "bundler.splits.summary/1"


# ---------------------------------------------------------------- leakage check on any manifest


@dataclass(frozen=True)
class Leak:
    """One normalized text found in more than one split, with the IDs in each."""

    key: str
    placements: dict[str, list[str]]

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "splits": self.placements}


def cross_split_leaks(by_key: Mapping[bytes, Sequence[tuple[str, str]]]) -> list[Leak]:
    """Every normalised-text key whose examples sit in more than one split (dropped ones aside)."""
    leaks = []
    for key, placed in by_key.items():
        where: dict[str, list[str]] = {}
        for example_id, place in placed:
            if place != DROPPED:
                where.setdefault(place, []).append(example_id)
        if len(where) > 1:
            leaks.append(Leak(key.hex(), {n: sorted(ids) for n, ids in sorted(where.items())}))
    return sorted(leaks, key=lambda leak: leak.key)


def find_leakage(manifest: Mapping[str, Any], records: Iterable[Mapping[str, Any]]) -> list[Leak]:
    """Return every normalized text that appears in two or more of the manifest's splits."""
    split_of = {i: name for name, entry in manifest["splits"].items() for i in entry["ids"]}
    id_field = manifest.get("id_field")
    fields = manifest["dedupe"]["fields"]
    by_key: dict[bytes, list[tuple[str, str]]] = {}
    for position, record in enumerate(records):
        example_id = content_hash(record) if id_field is None else example_id_of(record, id_field, position)
        place = split_of.get(example_id)
        if place is None:
            continue
        texts = [field_text(record.get(f)) for f in fields]
        key = text_key("\x00".join(normalize_text(t) for t in texts))
        by_key.setdefault(key, []).append((example_id, place))
    return cross_split_leaks(by_key)


# ---------------------------------------------------------------- writing and reading back


def manifest_text(manifest: Mapping[str, Any]) -> str:
    """Return the canonical JSON text of a manifest (sorted keys, indent 2, LF)."""
    return json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_manifest(manifest: Mapping[str, Any], path: Path) -> None:
    """Write the manifest as canonical JSON, atomically (temp file + os.replace)."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(manifest_text(manifest))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_manifest(path: Path) -> dict[str, Any]:
    """Read splits.json and check its schema."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SplitError(f"cannot read split manifest {path}: {exc}", "run `bundler split` to write it") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        found = manifest.get("schema") if isinstance(manifest, dict) else None
        raise SplitError(
            f"{path} is not a {SCHEMA} manifest (schema: {found!r})",
            "run `bundler split` to write it",
        )
    return manifest


def load_split(manifest: Mapping[str, Any], config: BundleConfig, project_dir: Path) -> dict[str, list[dict]]:
    """Load the dataset and return the manifest's exact split; raise if an example changed."""

    loaded = load_records(config, project_dir)
    recorded = manifest.get("dataset", {}).get("files", {})
    if recorded and recorded != dict(sorted(loaded.sha256.items())):
        ui.warn("dataset files differ from the ones the manifest recorded; checking each example")
    return select_split(manifest, loaded.records)


def select_split(manifest: Mapping[str, Any], records: Iterable[dict[str, Any]]) -> dict[str, list[dict]]:
    """Return {split: records in sorted-ID order} for the manifest's IDs; check every hash."""
    id_field = manifest.get("id_field")
    wanted: dict[str, tuple[str, str]] = {}
    for name, entry in manifest["splits"].items():
        for example_id, content in entry["examples"].items():
            wanted[example_id] = (name, content)
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for position, record in enumerate(records):
        content = content_hash(record)
        example_id = content if id_field is None else example_id_of(record, id_field, position)
        if example_id in wanted and example_id not in found:
            found[example_id] = (content, record)
    for example_id in sorted(wanted):
        name, expected = wanted[example_id]
        got = found.get(example_id)
        if got is None or got[0] != expected:
            raise DatasetChangedError(example_id, name, expected, got[0] if got else None)
    out: dict[str, list[dict]] = {}
    for name, entry in manifest["splits"].items():
        out[name] = [found[example_id][1] for example_id in entry["ids"]]
    return out


def summarize(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Return what `bundler inspect` shows: counts, label balance per split, the leakage summary."""
    leakage = manifest.get("leakage", {})
    method = manifest.get("method", {})
    labels = manifest.get("labels")
    balance = None
    if labels:
        balance = {}
        for name in SPLITS:
            counts = labels.get(name, {})
            total = sum(counts.values())
            balance[name] = {k: {"count": v, "share": round(v / total, 4)} for k, v in counts.items()}
    return {
        "schema": SUMMARY_SCHEMA,
        "method": method.get("name"),
        "seed": method.get("seed"),
        "ratios": method.get("ratios"),
        "id_field": manifest.get("id_field"),
        "counts": {name: entry["count"] for name, entry in manifest["splits"].items()},
        # The same per split, as one entry each (what `bundler inspect` renders as a table).
        "splits": {
            name: {
                "count": entry["count"],
                "root": entry["root"],
                "labels": dict(labels.get(name, {})) if labels else {},
            }
            for name, entry in manifest["splits"].items()
        },
        "roots": {name: entry["root"] for name, entry in manifest["splits"].items()},
        "label_field": labels.get("field") if labels else None,
        "labels": balance,
        "cuts": method.get("cuts"),
        "leakage": {
            "dedupe": leakage.get("mode"),
            "duplicate_groups": leakage.get("duplicate_groups", 0),
            "exact_groups": sum(1 for g in leakage.get("groups", []) if g["kind"] == "exact"),
            "dropped": leakage.get("dropped", 0),
            "cross_split": len(leakage.get("cross_split", [])),
        },
    }


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """Return the summary as short lines for a person (`bundler split`, `bundler inspect`)."""
    counts = summary["counts"]
    lines = [
        f"{summary['method']} split, seed {summary['seed']}: "
        + ", ".join(f"{name} {counts[name]}" for name in SPLITS if name in counts)
    ]
    for name in SPLITS:
        balance = (summary.get("labels") or {}).get(name)
        if balance:
            shares = ", ".join(f"{k} {v['count']} ({v['share']:.0%})" for k, v in balance.items())
            lines.append(f"  {name} labels: {shares}")
    leakage = summary["leakage"]
    lines.append(
        f"dedupe {leakage['dedupe']}: {leakage['duplicate_groups']} duplicate group(s) "
        f"({leakage['exact_groups']} exact), {leakage['dropped']} dropped, "
        f"{leakage['cross_split']} straddling splits"
    )
    return lines
