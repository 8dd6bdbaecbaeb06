"""The data facts: sources, sizes per split, languages, collection dates, dedupe and leakage.

They fill Annex IV 2(d), Annex XI 2(c) and sections 1-2 of the Commission's training-content summary
template (July 2025). Languages and dates are read from the vendored dataset files, streamed, with a
bounded number of records; a dataset that is not vendored gets them marked as not recorded.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from bundler.publish.compliance.evidence import NOT_RECORDED, Evidence, Fact, as_map
from bundler.publish.compliance.techdoc import Section, to_complete

# Function words that are frequent in each language and rare in the others (a stop-word vote: good
# enough to name the dominant language of a text dataset, not to label single sentences).
STOPWORDS = {
    "en": {"the", "and", "is", "of", "to", "it", "this", "was", "with", "for", "not", "but"},
    "de": {"der", "die", "und", "ist", "nicht", "das", "mit", "ein", "eine", "auch", "sehr"},
    "fr": {"le", "la", "et", "est", "les", "des", "une", "pas", "que", "pour", "très"},
    "es": {"el", "la", "y", "es", "los", "las", "una", "muy", "pero", "para", "que"},
    "it": {"il", "e", "di", "che", "non", "una", "sono", "per", "molto", "gli"},
    "nl": {"de", "het", "en", "een", "niet", "van", "is", "zeer", "maar", "ook"},
    "pt": {"o", "a", "e", "que", "não", "um", "uma", "muito", "para", "com"},
}
MAX_RECORDS = 100_000
_WORD = re.compile(r"[^\W\d_]+")


def dataset_records(ev: Evidence) -> list[dict[str, Any]] | None:
    """The vendored JSONL dataset's records (bounded), or None when the bundle holds no readable copy."""
    records: list[dict[str, Any]] = []
    files = ev.vendored_dataset_files()
    if not files:
        return None
    for path in files.values():
        try:
            with open(ev.bundle / path, encoding="utf-8") as handle:
                for line in handle:
                    if len(records) >= MAX_RECORDS:
                        return records
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(row, dict):
                        records.append(row)
        except (OSError, UnicodeDecodeError):
            return None
    return records


def detect_languages(texts: list[str]) -> dict[str, float]:
    """Share of texts voting for each language by stop words; texts with no vote are left out."""
    votes: Counter[str] = Counter()
    for text in texts:
        words = {w.casefold() for w in _WORD.findall(text)}
        scores = {lang: len(words & stop) for lang, stop in STOPWORDS.items()}
        best = max(scores.values(), default=0)
        winners = [lang for lang, score in scores.items() if score == best]
        if best >= 2 and len(winners) == 1:
            votes[winners[0]] += 1
    total = sum(votes.values())
    return {lang: round(n / total, 3) for lang, n in sorted(votes.items())} if total else {}


def data_facts(ev: Evidence) -> list[Fact]:
    """Provenance, selection, cleaning, splits, labels, languages and dates of the training data."""
    data = as_map(ev.config.get("data"))
    cfg, dataset, splits_file = ev.recipe("config.toml"), ev.recipe("dataset.json"), ev.recipe("splits.json")
    splits = as_map(ev.splits.get("splits"))
    records = dataset_records(ev)
    vendored = tuple(ev.vendored_dataset_files().values())
    facts = [
        ev.fact("Dataset source", ev.dataset.get("hub_id") or ev.dataset.get("source") or data.get("path"), dataset),
        ev.fact("Dataset files (sha256)", ev.dataset.get("files"), dataset),
        ev.fact("Dataset format", ev.dataset.get("format"), dataset),
        ev.fact("Examples per split", {k: v.get("count") for k, v in sorted(splits.items())}, splits_file),
        ev.fact("Split method", as_map(ev.splits.get("method")).get("name"), splits_file),
        ev.fact("Split seed and ratios", _split_params(ev.splits), splits_file),
        ev.fact("Cleaning: deduplication", ev.splits.get("dedupe"), splits_file),
        ev.fact("Duplicates dropped", as_map(ev.splits.get("leakage")).get("dropped"), splits_file),
        ev.fact("Leakage across splits", _cross_split(ev.splits), splits_file),
        ev.fact("Label balance", ev.splits.get("labels"), splits_file),
        ev.fact(
            "Fields used", {k: data.get(k) for k in ("prompt_field", "response_field", "label_field", "id_field")}, cfg
        ),
    ]
    if records is None:
        facts += [
            Fact("Languages (detected)", f"{NOT_RECORDED}: the dataset files are not vendored", (), "missing"),
            Fact("Collection dates", f"{NOT_RECORDED}: the dataset files are not vendored", (), "missing"),
        ]
        return facts
    texts = [" ".join(str(r.get(data.get(k) or "")) for k in ("prompt_field", "response_field")) for r in records]
    facts.append(ev.fact("Languages (detected, share of examples)", detect_languages(texts), *vendored))
    facts.append(_dates(ev, records, data.get("date_field"), vendored))
    return facts


def summary_sections(ev: Evidence, data: list[Fact]) -> list[Section]:
    """Sections 1 and 2 of the Commission's template for the public summary of training content."""
    by_label = {f.label: f for f in data}
    is_hub = bool(ev.dataset.get("hub_id")) or str(ev.dataset.get("source", "")).startswith(("hf://", "hub:"))
    results = ev.run_file("results.json")
    general = (
        to_complete("1.1 Provider name and contact"),
        ev.fact("1.2 Model name", as_map(ev.config.get("project")).get("name"), ev.recipe("config.toml")),
        ev.fact("1.2 Base model", ev.model.get("upstream_id") or ev.model.get("id"), ev.recipe("model.json")),
        ev.fact("1.3 Modality", "text", ev.recipe("config.toml")),
        ev.fact(
            "1.3 Size of the training data (examples)",
            (as_map(ev.splits.get("splits")).get("train") or {}).get("count"),
            ev.recipe("splits.json"),
        ),
        ev.fact("1.3 Tokens trained", ev.results.get("tokens"), results),
        by_label.get("Languages (detected, share of examples)") or by_label["Languages (detected)"],
        by_label["Collection dates"],
    )
    source = by_label["Dataset source"]
    dataset = ev.recipe("dataset.json")
    none = (
        "none recorded (the dataset is not from the Hub)"
        if not is_hub
        else "none recorded (the dataset is from the Hub)"
    )
    sources = (
        ev.fact("2.1 Publicly available datasets", source.value if is_hub else none, dataset),
        ev.fact("2.2 Private or licensed datasets", none if is_hub else source.value, dataset),
        to_complete("2.3 Data crawled from the web (bundler records no crawling; confirm)"),
        to_complete("2.4 User data (confirm whether the dataset holds user data)"),
        to_complete("2.5 Synthetic data (confirm whether any example was generated)"),
        by_label["Dataset files (sha256)"],
        by_label["Examples per split"],
        by_label["Cleaning: deduplication"],
        by_label["Duplicates dropped"],
        by_label["Leakage across splits"],
    )
    return [Section("1", "General information", general), Section("2", "List of data sources", sources)]


def _dates(ev: Evidence, records: list[dict[str, Any]], field: str | None, sources: tuple[str, ...]) -> Fact:
    if not field:
        return Fact("Collection dates", f"{NOT_RECORDED}: the config names no date field", (), "missing")
    dates = sorted(str(r[field])[:10] for r in records if r.get(field))
    if not dates:
        return Fact("Collection dates", f"{NOT_RECORDED}: no example has {field}", (), "missing")
    return ev.fact(
        "Collection dates",
        {"field": field, "earliest": dates[0], "latest": dates[-1], "with_date": len(dates)},
        *sources,
    )


def _split_params(splits: dict[str, Any]) -> dict[str, Any] | None:
    method = as_map(splits.get("method"))
    picked = {k: method[k] for k in ("seed", "ratios", "field", "label_field", "date_field") if k in method}
    return picked or None


def _cross_split(splits: dict[str, Any]) -> str | None:
    leakage = splits.get("leakage")
    if not isinstance(leakage, dict):
        return None
    crossing = leakage.get("cross_split") or []
    return (
        "none: no duplicate group straddles two splits" if not crossing else f"{len(crossing)} groups straddle splits"
    )
