"""The split manifest (splits.json): build it from the assignment, check leakage, reload it exactly.

How examples are read, deduped and assigned lives in assign.py; every public name there is also
importable from here, as it was before the two were separated.

Nothing here imports `datasets`: records arrive as plain dicts, so a million split in seconds.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.errors import DatasetChangedError, DatasetError, SplitError
from bundler.recipe.assign import (
    CONTENT_HASH,
    DROPPED,
    KEYED_HASH,
    NORMALIZATION,
    SPLITS,
    ExampleTable,
    ReadPlan,
    Units,
    assign_by_hash,
    assign_stratified,
    assign_temporal,
    content_hash,
    example_id_of,
    field_text,
    group_duplicates,
    keyed_position,
    largest_remainder,
    make_units,
    normalize_text,
    read_examples,
    text_fields_for,
    text_key,
)
from bundler.recipe.config import BundleConfig, DataConfig, SplitConfig

__all__ = [
    "CONTENT_HASH",
    "DROPPED",
    "KEYED_HASH",
    "NORMALIZATION",
    "ROOT_HASH",
    "SCHEMA",
    "SPLITS",
    "SUMMARY_SCHEMA",
    "ExampleTable",
    "Leak",
    "ReadPlan",
    "Units",
    "assign_by_hash",
    "assign_stratified",
    "assign_temporal",
    "build_manifest",
    "content_hash",
    "find_leakage",
    "group_duplicates",
    "keyed_position",
    "largest_remainder",
    "load_split",
    "make_split_manifest",
    "make_units",
    "manifest_text",
    "normalize_text",
    "read_examples",
    "read_manifest",
    "select_split",
    "split_root",
    "summarize",
    "summary_lines",
    "text_fields_for",
    "write_manifest",
]

log = logging.getLogger(__name__)

SCHEMA = "bundler.splits/1"
SUMMARY_SCHEMA = "bundler.splits.summary/1"
ROOT_HASH = "sha256 over lines json.dumps([id, content_sha256]) + '\\n' in sorted ID order"


def split_root(examples: Mapping[str, str]) -> str:
    """Return a split's root hash over its (ID, content hash) pairs in sorted ID order."""
    # Each line is json.dumps([id, content], ensure_ascii=False), spelled out for speed.
    quote = json.encoder.encode_basestring  # type: ignore[attr-defined]
    digest = hashlib.sha256()
    for example_id in sorted(examples):
        line = f'[{quote(example_id)}, "{examples[example_id]}"]\n'
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()


# ---------------------------------------------------------------- the manifest


def make_split_manifest(config: BundleConfig, project_dir: Path) -> dict[str, Any]:
    """Load the configured dataset and return the full splits.json object."""
    from bundler.recipe.datasource import load_records

    loaded = load_records(config, project_dir)
    dataset = {
        "format": loaded.files.format,
        "source": loaded.files.source,
        "files": dict(sorted(loaded.sha256.items())),
    }
    return build_manifest(loaded.records, config, dataset)


def build_manifest(
    records: Iterable[Mapping[str, Any]], config: BundleConfig, dataset: Mapping[str, Any]
) -> dict[str, Any]:
    """Return splits.json for these records (any iterable, read once) under config's data/split."""
    data, split = config.data, config.split
    if split.seed is None:
        split = config.resolved().split
    records = iter(records)
    first = next(records, None)
    if first is None:
        raise DatasetError("the dataset has no examples", "add examples; an empty dataset cannot be split")
    if data.id_field is None:
        # A warning, not info: with content-hash IDs an edited example is a new example and may
        # change split, which the user should know before relying on the split.
        log.warning(
            "data.id_field is not set: each example's ID is its content hash (sha256); "
            "editing an example gives it a new ID"
        )
    _check_fields(first, data, split)
    plan = ReadPlan(
        id_field=data.id_field,
        text_fields=text_fields_for(data, first),
        label_field=data.label_field,
        date_field=data.date_field if split.method == "temporal" else None,
    )
    table = read_examples(_chain(first, records), plan)
    groups = group_duplicates(table)
    units = make_units(len(table.ids), groups, split.dedupe)

    method: dict[str, Any] = {
        "name": split.method,
        "seed": split.seed,
        "ratios": dict(split.ratios),
    }
    method["order"] = list(SPLITS)
    method["keyed_hash"] = KEYED_HASH
    if split.method == "hash":
        places = assign_by_hash(table, units, split)
    elif split.method == "stratified":
        places, small = assign_stratified(table, units, split)
        method.update(label_field=data.label_field, rounding="largest-remainder", small_classes=small)
    else:
        places, cuts = assign_temporal(table, units, split)
        method.update(date_field=data.date_field, rounding="largest-remainder", cuts=cuts)

    split_of: list[str] = [DROPPED] * len(table.ids)
    for leader, place in zip(units.leaders, places, strict=True):
        for i in units.members(leader):
            split_of[i] = place
    _check_not_empty(split_of, split)

    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "id_field": data.id_field,
        "id_source": "field" if data.id_field else "content-sha256",
        "content_hash": CONTENT_HASH,
        "root_hash": ROOT_HASH,
        "dataset": dict(dataset),
        "method": method,
        "dedupe": {
            "mode": split.dedupe,
            "fields": list(plan.text_fields),
            "normalization": NORMALIZATION,
            "keep": "first in file order",
        },
        "splits": _split_entries(table, split_of),
        "labels": _label_counts(table, split_of, data.label_field),
    }
    manifest["leakage"] = _leakage_report(table, groups, split_of, split.dedupe)
    manifest["totals"] = {
        "records": len(table.ids) + sum(table.repeated.values()),
        "examples": sum(1 for s in split_of if s != DROPPED),
        "dropped": manifest["leakage"]["dropped"],
    }
    if manifest["leakage"]["cross_split"]:
        log.warning(
            "%d duplicate group(s) straddle splits (dedupe = %r); see the leakage report",
            len(manifest["leakage"]["cross_split"]),
            split.dedupe,
        )
    return manifest


def _chain(first: Mapping[str, Any], rest: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    yield first
    yield from rest


def _check_fields(first: Mapping[str, Any], data: DataConfig, split: SplitConfig) -> None:
    needed: list[tuple[str, str | None, str]] = [("ID", data.id_field, "data.id_field")]
    if split.method == "stratified":
        if data.label_field is None:
            raise SplitError(
                "split.method = 'stratified' needs a label field",
                "set data.label_field to the column that holds each example's class",
            )
    if split.method == "temporal" and data.date_field is None:
        raise SplitError(
            "split.method = 'temporal' needs a date field",
            "set data.date_field to the column that holds each example's date (ISO 8601)",
        )
    needed += [
        ("label", data.label_field, "data.label_field"),
        ("date", data.date_field, "data.date_field"),
    ]
    if split.method != "temporal":
        needed.pop()
    for what, name, setting in needed:
        if name is not None and name not in first:
            error = DatasetError if what == "ID" else SplitError
            raise error(
                f"the dataset has no {what} field {name!r} (columns: {', '.join(sorted(first))})",
                f"set {setting} to one of the columns above",
            )


def _check_not_empty(split_of: Sequence[str], split: SplitConfig) -> None:
    counts = Counter(split_of)
    for name in SPLITS:
        if split.ratios[name] > 0 and counts[name] == 0:
            kept = len(split_of) - counts[DROPPED]
            raise SplitError(
                f"split {name!r} would be empty: {kept} example(s) at ratio {split.ratios[name]:g}",
                "add examples, or set its ratio to 0 in [split.ratios] if you mean it to be empty",
            )


def _split_entries(table: ExampleTable, split_of: Sequence[str]) -> dict[str, Any]:
    chosen: dict[str, dict[str, str]] = {name: {} for name in SPLITS}
    for example_id, content, place in zip(table.ids, table.contents, split_of, strict=True):
        if place != DROPPED:
            chosen[place][example_id] = content
    entries = {}
    for name in SPLITS:
        examples = dict(sorted(chosen[name].items()))
        entries[name] = {
            "ids": list(examples),
            "count": len(examples),
            "examples": examples,
            "root": split_root(examples),
        }
    return entries


def _label_counts(table: ExampleTable, split_of: Sequence[str], label_field: str | None) -> dict[str, Any] | None:
    if label_field is None or not table.labels:
        return None
    counts: dict[str, Counter[str]] = {name: Counter() for name in SPLITS}
    for label, place in zip(table.labels, split_of, strict=True):
        if place != DROPPED:
            counts[place][label] += 1
    return {"field": label_field, **{n: dict(sorted(c.items())) for n, c in counts.items()}}


def _leakage_report(table: ExampleTable, groups: list[list[int]], split_of: Sequence[str], mode: str) -> dict[str, Any]:
    listed: list[dict[str, Any]] = []
    for group in groups:
        raws = {table.raw_keys[i] for i in group}
        listed.append(
            {
                "key": table.text_keys[group[0]].hex(),
                "kind": "exact" if len(raws) == 1 else "normalized",
                "first": table.ids[group[0]],
                "members": {table.ids[i]: split_of[i] for i in group},
            }
        )
    listed.sort(key=lambda g: g["key"])
    by_key = {table.text_keys[g[0]]: [(table.ids[i], split_of[i]) for i in g] for g in groups}
    return {
        "mode": mode,
        "duplicate_groups": len(groups),
        "dropped": split_of.count(DROPPED) + sum(table.repeated.values()),
        "repeated_ids": dict(sorted(table.repeated.items())),
        "groups": listed,
        "cross_split": [leak.as_dict() for leak in _cross_split(by_key)],
    }


# ---------------------------------------------------------------- leakage check on any manifest


@dataclass(frozen=True)
class Leak:
    """One normalized text found in more than one split, with the IDs in each."""

    key: str
    placements: dict[str, list[str]]

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "splits": self.placements}


def _cross_split(by_key: Mapping[bytes, Sequence[tuple[str, str]]]) -> list[Leak]:
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
    return _cross_split(by_key)


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
    from bundler.recipe.datasource import load_records

    loaded = load_records(config, project_dir)
    recorded = manifest.get("dataset", {}).get("files", {})
    if recorded and recorded != dict(sorted(loaded.sha256.items())):
        log.warning("dataset files differ from the ones the manifest recorded; checking each example")
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
