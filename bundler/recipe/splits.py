"""The split manifest (splits.json): build it from the assignment.

How examples are read, deduped and assigned lives in assign.py; writing, reading back, summarising
and the leakage check live in splitfile.py. Every public name of both is also importable from here,
as it was before they were separated.

Nothing here imports `datasets`: records arrive as plain dicts, so a million split in seconds.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bundler import ui
from bundler.errors import DatasetError, SplitError
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
    group_duplicates,
    keyed_position,
    largest_remainder,
    make_units,
    normalize_text,
    read_examples,
    text_fields_for,
)
from bundler.recipe.config import BundleConfig, DataConfig, SplitConfig
from bundler.recipe.datasource import load_records
from bundler.recipe.splitfile import (
    SCHEMA,
    SUMMARY_SCHEMA,
    Leak,
    cross_split_leaks,
    find_leakage,
    load_split,
    manifest_text,
    read_manifest,
    select_split,
    summarize,
    summary_lines,
    write_manifest,
)

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
        ui.warn(
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
        ui.warn(
            f"{len(manifest['leakage']['cross_split'])} duplicate group(s) straddle splits "
            f"(dedupe = {split.dedupe!r}); see the leakage report"
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
        "cross_split": [leak.as_dict() for leak in cross_split_leaks(by_key)],
    }
