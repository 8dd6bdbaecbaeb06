"""The split manifest (splits.json): dedupe, assign train/val/test, check leakage, reload exactly.

Assignment (`hash`, the default) is by a keyed hash of each example's ID, so the split needs no
saved shuffle and adding examples never moves an existing one. Dedupe runs first: examples whose
text is the same after NFC, casefolding and whitespace collapsing form a group; the first in file
order is the one kept (keep-one) or the one whose place the whole group follows (keep-group). File
order keeps appended data stable: a new duplicate of an old example can never displace it.

Nothing here imports `datasets`: records arrive as plain dicts, so a million split in seconds.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import logging
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

from bundler.config import BundleConfig, DataConfig, SplitConfig
from bundler.errors import DatasetChangedError, DatasetError, SplitError

log = logging.getLogger(__name__)

SCHEMA = "bundler.splits/1"
SUMMARY_SCHEMA = "bundler.splits.summary/1"
SPLITS = ("train", "val", "test")
DROPPED = "dropped"

CONTENT_HASH = (
    "sha256 of json.dumps(record, sort_keys=True, separators=(',', ':'), ensure_ascii=False)"
)
ROOT_HASH = "sha256 over lines json.dumps([id, content_sha256]) + '\\n' in sorted ID order"
KEYED_HASH = "blake2b(id as UTF-8, key=seed as 8 bytes big-endian, digest_size=8) / 2**64"
NORMALIZATION = "Unicode NFC, casefold, whitespace runs collapsed to one space, ends stripped"


def content_hash(record: Mapping[str, Any]) -> str:
    """Return an example's content hash (the runtime recomputes exactly this to check its data)."""
    return hashlib.sha256(_CANONICAL.encode(record).encode("utf-8")).hexdigest()


# Exactly json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False); built once
# because json.dumps with arguments makes a new encoder per call (a quarter of the time at 1M).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def normalize_text(text: str) -> str:
    """Return text as dedupe compares it: NFC, casefolded, whitespace collapsed."""
    if text.isascii():  # NFC is the identity on ASCII and casefold is lower(): 2x faster at 1M
        return " ".join(text.lower().split())
    # casefold can leave a string un-normalized (e.g. U+0130), hence NFC on both sides.
    folded = unicodedata.normalize("NFC", text).casefold()
    return unicodedata.normalize("NFC", " ".join(folded.split()))


def keyed_position(example_id: str, seed: int) -> float:
    """Return the example's place in [0, 1) under the seed; the hash method cuts this by ratios."""
    digest = hashlib.blake2b(example_id.encode("utf-8"), key=_seed_key(seed), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64


def _seed_key(seed: int) -> bytes:
    return seed.to_bytes(8, "big")


def split_root(examples: Mapping[str, str]) -> str:
    """Return a split's root hash over its (ID, content hash) pairs in sorted ID order."""
    # Each line is json.dumps([id, content], ensure_ascii=False), spelled out for speed.
    quote = json.encoder.encode_basestring  # type: ignore[attr-defined]
    digest = hashlib.sha256()
    for example_id in sorted(examples):
        line = f'[{quote(example_id)}, "{examples[example_id]}"]\n'
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()


# ---------------------------------------------------------------- reading the examples


@dataclass
class ExampleTable:
    """Per-example facts the split needs, in file order; the records themselves are not kept."""

    ids: list[str] = field(default_factory=list)
    contents: list[str] = field(default_factory=list)
    text_keys: list[bytes] = field(default_factory=list)
    raw_keys: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    dates: list[datetime] = field(default_factory=list)
    repeated: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class ReadPlan:
    """Which fields the split reads from each record."""

    id_field: str | None
    text_fields: tuple[str, ...]
    label_field: str | None
    date_field: str | None


def text_fields_for(data: DataConfig, first_record: Mapping[str, Any]) -> tuple[str, ...]:
    """Return the fields dedupe compares: prompt/response if present, else all but ID/label/date."""
    preferred = tuple(f for f in (data.prompt_field, data.response_field) if f in first_record)
    if preferred:
        return preferred
    skip = {data.id_field, data.label_field, data.date_field}
    return tuple(sorted(k for k in first_record if k not in skip))


def _field_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def read_examples(records: Iterable[Mapping[str, Any]], plan: ReadPlan) -> ExampleTable:
    """Hash and key every record; raise on missing fields and on one ID with two contents."""
    table = ExampleTable()
    seen: dict[str, str] = {}
    for position, record in enumerate(records):
        try:
            content = content_hash(record)
        except (TypeError, ValueError) as exc:
            raise DatasetError(
                f"record {position} has a value with no JSON form ({exc})",
                "store dates and other non-JSON values as strings (ISO 8601 for dates)",
            ) from None
        example_id = content if plan.id_field is None else _id_of(record, plan.id_field, position)
        previous = seen.get(example_id)
        if previous is not None:
            if previous != content:
                raise DatasetError(
                    f"ID {example_id!r} appears twice with different content (second at record "
                    f"{position})",
                    "give every example its own ID, or remove the stale copy",
                )
            table.repeated[example_id] += 1  # the very same example twice: one is enough
            continue
        seen[example_id] = content
        texts = [_field_text(record.get(f)) for f in plan.text_fields]
        table.ids.append(example_id)
        table.contents.append(content)
        # Only compared within this run (exact vs normalized group), so the built-in hash will do.
        table.raw_keys.append(hash("\x00".join(texts)))
        table.text_keys.append(_key("\x00".join(normalize_text(t) for t in texts)))
        if plan.label_field is not None:
            table.labels.append(_label_of(record, plan.label_field, example_id))
        if plan.date_field is not None:
            table.dates.append(_date_of(record, plan.date_field, example_id))
    if not table.ids:
        raise DatasetError(
            "the dataset has no examples", "add examples; an empty dataset cannot be split"
        )
    return table


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _id_of(record: Mapping[str, Any], id_field: str, position: int) -> str:
    value = record.get(id_field)
    if value is None or value == "":
        raise DatasetError(
            f"record {position} has no value in the ID field {id_field!r}",
            "give every example an ID, or remove data.id_field to use content hashes as IDs",
        )
    # str(), not JSON: the runtime (runtime/data.py) keys records by str(record[id_field]).
    return value if isinstance(value, str) else str(value)


def _label_of(record: Mapping[str, Any], label_field: str, example_id: str) -> str:
    value = record.get(label_field)
    if value is None:
        raise SplitError(
            f"example {example_id!r} has no value in the label field {label_field!r}",
            "give every example a label, or unset data.label_field (and use split.method = 'hash')",
        )
    return value if isinstance(value, str) else json.dumps(value)


def _date_of(record: Mapping[str, Any], date_field: str, example_id: str) -> datetime:
    value = record.get(date_field)
    parsed: datetime | None = None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            parsed = None
    if parsed is None:
        shown = "no value" if value is None else f"{value!r}"
        raise SplitError(
            f"example {example_id!r}: cannot read a date from {date_field!r} ({shown})",
            "write dates as ISO 8601, e.g. 2024-05-01 or 2024-05-01T13:45:00Z",
        )
    # Dates without a zone are taken as UTC so that mixed files still compare.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------- dedupe and assignment


@dataclass(frozen=True)
class Units:
    """What gets assigned: leaders alone, or (keep-group) each with its whole duplicate group."""

    leaders: list[int]
    groups: dict[int, tuple[int, ...]]

    def members(self, leader: int) -> tuple[int, ...]:
        return self.groups.get(leader) or (leader,)


def group_duplicates(table: ExampleTable) -> list[list[int]]:
    """Return groups (size > 1) of examples with the same normalized text, members in file order."""
    first: dict[bytes, int] = {}
    groups: dict[int, list[int]] = {}
    for index, key in enumerate(table.text_keys):
        leader = first.setdefault(key, index)
        if leader != index:
            groups.setdefault(leader, [leader]).append(index)
    return [groups[leader] for leader in sorted(groups)]


def make_units(size: int, groups: list[list[int]], mode: str) -> Units:
    """Return the units to assign under the dedupe mode; keep-one leaves later duplicates out."""
    if mode == "off":
        return Units(list(range(size)), {})
    followers = {i for group in groups for i in group[1:]}
    leaders = [i for i in range(size) if i not in followers]
    together = {group[0]: tuple(group) for group in groups} if mode == "keep-group" else {}
    return Units(leaders, together)


def largest_remainder(total: int, ratios: Mapping[str, float]) -> dict[str, int]:
    """Split `total` into integer counts proportional to ratios; ties go to the earlier split."""
    # Fractions of the ratios as written (0.1 is 1/10, not 0.1000000000000000055...), so that
    # equal remainders are equal and the tie-break, not float noise, decides.
    exact = {name: total * Fraction(repr(ratios[name])) for name in SPLITS}
    counts = {name: int(exact[name]) for name in SPLITS}
    left = total - sum(counts.values())
    by_remainder = sorted(SPLITS, key=lambda n: (-(exact[n] - counts[n]), SPLITS.index(n)))
    for name in by_remainder[:left]:
        counts[name] += 1
    return counts


def assign_by_hash(table: ExampleTable, units: Units, split: SplitConfig) -> list[str]:
    """Return each unit's split from the keyed hash of its leader's ID."""
    seed = _seed_of(split)
    key = _seed_key(seed)
    bounds = []
    running = 0.0
    for name in SPLITS:
        running += split.ratios[name]
        bounds.append((running, name))
    places = []
    ids = table.ids
    for leader in units.leaders:
        digest = hashlib.blake2b(ids[leader].encode("utf-8"), key=key, digest_size=8)
        position = int.from_bytes(digest.digest(), "big") / 2**64
        places.append(next((n for bound, n in bounds if position < bound), _last_nonzero(split)))
    return places


def _last_nonzero(split: SplitConfig) -> str:
    return [n for n in SPLITS if split.ratios[n] > 0][-1]


def _seed_of(split: SplitConfig) -> int:
    if split.seed is None:
        raise SplitError("split.seed is not resolved", "pass config.resolved() to the split")
    return split.seed


def assign_stratified(
    table: ExampleTable, units: Units, split: SplitConfig
) -> tuple[list[str], list[str]]:
    """Return each unit's split with exact per-class ratios, and the classes too small for them."""
    seed = _seed_of(split)
    by_class: dict[str, list[int]] = {}
    leaders = units.leaders
    for u, leader in enumerate(leaders):
        by_class.setdefault(table.labels[leader], []).append(u)
    places = [""] * len(leaders)
    small = []
    wanted = [n for n in SPLITS if split.ratios[n] > 0]
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda u: keyed_position(table.ids[leaders[u]], seed))
        counts = largest_remainder(len(members), split.ratios)
        if any(counts[n] == 0 for n in wanted):
            small.append(label)
        start = 0
        for name in SPLITS:
            for u in members[start : start + counts[name]]:
                places[u] = name
            start += counts[name]
    if small:
        log.warning(
            "%d class(es) too small to appear in every split: %s",
            len(small),
            ", ".join(repr(s) for s in small[:10]),
        )
    return places, small


def assign_temporal(
    table: ExampleTable, units: Units, split: SplitConfig
) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Return each unit's split by date (oldest to train), and each split's first and last date."""
    seed = _seed_of(split)
    leaders, dates = units.leaders, table.dates
    # A group (keep-group) is dated by its oldest member.
    when = [
        min(dates[i] for i in units.members(u)) if u in units.groups else dates[u] for u in leaders
    ]
    # Same-date units are ordered by keyed hash so the cut through them does not follow file order.
    order = sorted(
        range(len(leaders)), key=lambda u: (when[u], keyed_position(table.ids[leaders[u]], seed))
    )
    counts = largest_remainder(len(leaders), split.ratios)
    places = [""] * len(leaders)
    cuts: dict[str, dict[str, str]] = {}
    start = 0
    for name in SPLITS:
        chosen = order[start : start + counts[name]]
        for u in chosen:
            places[u] = name
        if chosen:
            cuts[name] = {
                "first": when[chosen[0]].isoformat(),
                "last": when[chosen[-1]].isoformat(),
            }
        start += counts[name]
    return places, cuts


# ---------------------------------------------------------------- the manifest


def make_split_manifest(config: BundleConfig, project_dir: Path) -> dict[str, Any]:
    """Load the configured dataset and return the full splits.json object."""
    from bundler.datasource import load_records

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
        raise DatasetError(
            "the dataset has no examples", "add examples; an empty dataset cannot be split"
        )
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
        method.update(
            label_field=data.label_field, rounding="largest-remainder", small_classes=small
        )
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


def _chain(
    first: Mapping[str, Any], rest: Iterable[Mapping[str, Any]]
) -> Iterable[Mapping[str, Any]]:
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


def _label_counts(
    table: ExampleTable, split_of: Sequence[str], label_field: str | None
) -> dict[str, Any] | None:
    if label_field is None or not table.labels:
        return None
    counts: dict[str, Counter[str]] = {name: Counter() for name in SPLITS}
    for label, place in zip(table.labels, split_of, strict=True):
        if place != DROPPED:
            counts[place][label] += 1
    return {"field": label_field, **{n: dict(sorted(c.items())) for n, c in counts.items()}}


def _leakage_report(
    table: ExampleTable, groups: list[list[int]], split_of: Sequence[str], mode: str
) -> dict[str, Any]:
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
        example_id = (
            content_hash(record) if id_field is None else _id_of(record, id_field, position)
        )
        place = split_of.get(example_id)
        if place is None:
            continue
        texts = [_field_text(record.get(f)) for f in fields]
        key = _key("\x00".join(normalize_text(t) for t in texts))
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
        raise SplitError(
            f"cannot read split manifest {path}: {exc}", "run `bundler split` to write it"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        found = manifest.get("schema") if isinstance(manifest, dict) else None
        raise SplitError(
            f"{path} is not a {SCHEMA} manifest (schema: {found!r})",
            "run `bundler split` to write it",
        )
    return manifest


def load_split(
    manifest: Mapping[str, Any], config: BundleConfig, project_dir: Path
) -> dict[str, list[dict]]:
    """Load the dataset and return the manifest's exact split; raise if an example changed."""
    from bundler.datasource import load_records

    loaded = load_records(config, project_dir)
    recorded = manifest.get("dataset", {}).get("files", {})
    if recorded and recorded != dict(sorted(loaded.sha256.items())):
        log.warning(
            "dataset files differ from the ones the manifest recorded; checking each example"
        )
    return select_split(manifest, loaded.records)


def select_split(
    manifest: Mapping[str, Any], records: Iterable[dict[str, Any]]
) -> dict[str, list[dict]]:
    """Return {split: records in sorted-ID order} for the manifest's IDs; check every hash."""
    id_field = manifest.get("id_field")
    wanted: dict[str, tuple[str, str]] = {}
    for name, entry in manifest["splits"].items():
        for example_id, content in entry["examples"].items():
            wanted[example_id] = (name, content)
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for position, record in enumerate(records):
        content = content_hash(record)
        example_id = content if id_field is None else _id_of(record, id_field, position)
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
            balance[name] = {
                k: {"count": v, "share": round(v / total, 4)} for k, v in counts.items()
            }
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
