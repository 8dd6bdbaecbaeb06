"""Reading examples and assigning them to splits: hashes, dedupe groups, and the three methods.

Assignment (`hash`, the default) is by a keyed hash of each example's ID, so the split needs no
saved shuffle and adding examples never moves an existing one. Dedupe runs first: examples whose
text is the same after NFC, casefolding and whitespace collapsing form a group; the first in file
order is the one kept (keep-one) or the one whose place the whole group follows (keep-group). File
order keeps appended data stable: a new duplicate of an old example can never displace it.

splits.py builds the manifest from what this module returns. Nothing here imports `datasets`:
records arrive as plain dicts, so a million split in seconds.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from fractions import Fraction
from typing import Any

from bundler import ui
from bundler.errors import DatasetError, SplitError
from bundler.recipe.config import DataConfig, SplitConfig

SPLITS = ("train", "val", "test")
DROPPED = "dropped"

CONTENT_HASH = "sha256 of json.dumps(record, sort_keys=True, separators=(',', ':'), ensure_ascii=False)"
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


def field_text(value: Any) -> str:
    """Return a field as the text dedupe compares: strings as they are, anything else as sorted JSON."""
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
        example_id = content if plan.id_field is None else example_id_of(record, plan.id_field, position)
        previous = seen.get(example_id)
        if previous is not None:
            if previous != content:
                raise DatasetError(
                    f"ID {example_id!r} appears twice with different content (second at record {position})",
                    "give every example its own ID, or remove the stale copy",
                )
            table.repeated[example_id] += 1  # the very same example twice: one is enough
            continue
        seen[example_id] = content
        texts = [field_text(record.get(f)) for f in plan.text_fields]
        table.ids.append(example_id)
        table.contents.append(content)
        # Only compared within this run (exact vs normalized group), so the built-in hash will do.
        table.raw_keys.append(hash("\x00".join(texts)))
        table.text_keys.append(text_key("\x00".join(normalize_text(t) for t in texts)))
        if plan.label_field is not None:
            table.labels.append(_label_of(record, plan.label_field, example_id))
        if plan.date_field is not None:
            table.dates.append(_date_of(record, plan.date_field, example_id))
    if not table.ids:
        raise DatasetError("the dataset has no examples", "add examples; an empty dataset cannot be split")
    return table


def text_key(text: str) -> bytes:
    """Return the 16-byte key that groups examples with the same normalized text."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def example_id_of(record: Mapping[str, Any], id_field: str, position: int) -> str:
    """Return the record's ID as the runtime keys it; raise when the field is empty."""
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


def assign_stratified(table: ExampleTable, units: Units, split: SplitConfig) -> tuple[list[str], list[str]]:
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
        ui.warn(f"{len(small)} class(es) too small to appear in every split: {', '.join(repr(s) for s in small[:10])}")
    return places, small


def assign_temporal(
    table: ExampleTable, units: Units, split: SplitConfig
) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Return each unit's split by date (oldest to train), and each split's first and last date."""
    seed = _seed_of(split)
    leaders, dates = units.leaders, table.dates
    # A group (keep-group) is dated by its oldest member.
    when = [min(dates[i] for i in units.members(u)) if u in units.groups else dates[u] for u in leaders]
    # Same-date units are ordered by keyed hash so the cut through them does not follow file order.
    order = sorted(range(len(leaders)), key=lambda u: (when[u], keyed_position(table.ids[leaders[u]], seed)))
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
