"""Properties of the split that must hold for any data (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bundler.errors import SplitError
from bundler.recipe.config import BundleConfig
from bundler.recipe.splits import DROPPED, build_manifest, find_leakage, largest_remainder, select_split

DATASET = {"format": "jsonl", "source": "data.jsonl", "files": {}}
RATIOS = {"train": 0.5, "val": 0.25, "test": 0.25}
# A few texts, and case/spacing variants of them, so that duplicate groups are common.
POOL = ["hello world", "Hello  World", " HELLO world ", "café", "cafe\u0301", "CAFÉ", "x", "X "]

texts = st.one_of(st.sampled_from(POOL), st.text(max_size=6))


def make_config(seed: int, **split: Any) -> BundleConfig:
    return BundleConfig.model_validate(
        {
            "project": {"name": "demo", "seed": seed},
            "model": {"id": "org/model"},
            "data": {"path": "data.jsonl"},
            "split": {"ratios": RATIOS, **split},
        }
    ).resolved()


def rows_from(prompts: list[str], start: int = 0) -> list[dict[str, Any]]:
    return [{"id": f"id{start + i}", "prompt": p, "response": "r"} for i, p in enumerate(prompts)]


def placed(manifest: dict[str, Any]) -> dict[str, str]:
    where = {i: name for name, entry in manifest["splits"].items() for i in entry["ids"]}
    for group in manifest["leakage"]["groups"]:
        for example_id, place in group["members"].items():
            where.setdefault(example_id, place)
    return where


def split_or_reject(rows: list[dict[str, Any]], config: BundleConfig) -> dict[str, Any]:
    try:
        return build_manifest(rows, config, DATASET)
    except SplitError:
        assume(False)  # too few distinct examples to fill every split; not what is under test
        raise


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    old=st.lists(texts, min_size=12, max_size=40),
    new=st.lists(texts, min_size=1, max_size=40),
    seed=st.integers(0, 2**32 - 1),
    dedupe=st.sampled_from(["keep-one", "keep-group", "off"]),
)
def test_adding_examples_never_moves_existing_ones(old: list[str], new: list[str], seed: int, dedupe: str) -> None:
    config = make_config(seed, dedupe=dedupe)
    before = placed(split_or_reject(rows_from(old), config))
    after = placed(split_or_reject(rows_from(old) + rows_from(new, start=len(old)), config))
    # Every old example keeps its split, and one that was dropped as a duplicate stays dropped.
    assert {i: after[i] for i in before} == before
    assert all(after[f"id{i}"] in ("train", "val", "test", DROPPED) for i in range(len(old) + len(new)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    prompts=st.lists(texts, min_size=12, max_size=60),
    seed=st.integers(0, 2**32 - 1),
    dedupe=st.sampled_from(["keep-one", "keep-group"]),
)
def test_deduped_splits_never_leak(prompts: list[str], seed: int, dedupe: str) -> None:
    rows = rows_from(prompts)
    manifest = split_or_reject(rows, make_config(seed, dedupe=dedupe))
    assert find_leakage(manifest, rows) == []
    assert manifest["leakage"]["cross_split"] == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(prompts=st.lists(texts, min_size=12, max_size=60), seed=st.integers(0, 2**32 - 1))
def test_reloading_a_manifest_returns_exactly_its_split(prompts: list[str], seed: int) -> None:
    rows = rows_from(prompts)
    manifest = split_or_reject(rows, make_config(seed))
    selected = select_split(manifest, rows)
    for name, entry in manifest["splits"].items():
        assert [r["id"] for r in selected[name]] == entry["ids"]


@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
def test_stratified_counts_per_class_are_the_largest_remainder_counts(sizes: list[int], seed: int) -> None:
    rows = [
        {"id": f"c{c}-{i}", "prompt": f"class {c} example {i}", "response": "r", "label": f"c{c}"}
        for c, size in enumerate(sizes)
        for i in range(size)
    ]
    config = BundleConfig.model_validate(
        {
            "project": {"name": "demo", "seed": seed},
            "model": {"id": "org/model"},
            "data": {"path": "data.jsonl", "label_field": "label"},
            "split": {"method": "stratified", "ratios": RATIOS},
        }
    ).resolved()
    manifest = split_or_reject(rows, config)
    for c, size in enumerate(sizes):
        got = {name: manifest["labels"][name].get(f"c{c}", 0) for name in ("train", "val", "test")}
        assert got == largest_remainder(size, RATIOS)
        assert sum(got.values()) == size


@given(st.text())
def test_normalized_text_is_nfc_casefolded_with_whitespace_collapsed(text: str) -> None:
    import unicodedata

    from bundler.recipe.splits import normalize_text

    slow = unicodedata.normalize("NFC", " ".join(unicodedata.normalize("NFC", text).casefold().split()))
    assert normalize_text(text) == slow
    assert normalize_text(normalize_text(text)) == normalize_text(text)
