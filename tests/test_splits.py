"""Split manifests: methods, dedupe, leakage, exact reload, and the errors a user can cause."""

from __future__ import annotations

import hashlib
import json
import random
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from bundler.errors import EXIT_INPUT, ConfigError, DatasetChangedError, DatasetError, SplitError
from bundler.recipe.config import BundleConfig
from bundler.recipe.configfile import parse_config
from bundler.recipe.splits import (
    SCHEMA,
    build_manifest,
    content_hash,
    find_leakage,
    largest_remainder,
    load_split,
    make_split_manifest,
    manifest_text,
    select_split,
    split_root,
    summarize,
    write_manifest,
)

DATASET = {"format": "jsonl", "source": "data.jsonl", "files": {}}


def make_config(data: dict[str, Any] | None = None, **split: Any) -> BundleConfig:
    return BundleConfig.model_validate(
        {
            "project": {"name": "demo", "seed": 3},
            "model": {"id": "org/model"},
            "data": {"path": "data.jsonl", **(data or {})},
            "split": split,
        }
    ).resolved()


def examples(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"ex{i:04d}", "prompt": f"question {i}", "response": f"answer {i}", **extra} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def placement(manifest: dict[str, Any]) -> dict[str, str]:
    return {i: name for name, entry in manifest["splits"].items() for i in entry["ids"]}


# ---------------------------------------------------------------- the manifest itself


def test_manifest_is_byte_identical_for_the_same_data_and_seed(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", examples(200))
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    write_manifest(make_split_manifest(make_config(), tmp_path), first)
    write_manifest(make_split_manifest(make_config(), tmp_path), second)
    assert first.read_bytes() == second.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_manifest_records_dataset_files_method_seed_and_schema(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", examples(50))
    manifest = make_split_manifest(make_config(seed=11), tmp_path)
    assert manifest["schema"] == SCHEMA
    assert manifest["dataset"] == {
        "format": "jsonl",
        "source": "data.jsonl",
        "files": {"data.jsonl": hashlib.sha256(data.read_bytes()).hexdigest()},
    }
    assert manifest["method"]["name"] == "hash"
    assert manifest["method"]["seed"] == 11
    assert manifest["method"]["ratios"] == {"train": 0.8, "val": 0.1, "test": 0.1}
    assert manifest["id_field"] == "id"


def test_each_split_holds_sorted_ids_content_hashes_count_and_root() -> None:
    rows = examples(300)
    manifest = build_manifest(rows, make_config(), DATASET)
    by_id = {r["id"]: r for r in rows}
    for entry in manifest["splits"].values():
        assert entry["ids"] == sorted(entry["ids"])
        assert entry["count"] == len(entry["ids"])
        assert list(entry["examples"]) == entry["ids"]
        for example_id, digest in entry["examples"].items():
            text = json.dumps(by_id[example_id], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            assert digest == hashlib.sha256(text.encode("utf-8")).hexdigest()
        lines = "".join(json.dumps([i, entry["examples"][i]], ensure_ascii=False) + "\n" for i in entry["ids"])
        assert entry["root"] == hashlib.sha256(lines.encode("utf-8")).hexdigest()
    assert sum(e["count"] for e in manifest["splits"].values()) == 300


def test_write_manifest_writes_canonical_json(tmp_path: Path) -> None:
    manifest = build_manifest(examples(40) + [{"id": "é", "prompt": "naïve", "response": "x"}], make_config(), DATASET)
    target = tmp_path / "out" / "splits.json"
    write_manifest(manifest, target)
    text = target.read_text(encoding="utf-8")
    assert text == json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert text == manifest_text(manifest)
    assert "\r" not in text and "naïve" not in text  # the text itself is never stored, only hashes


def test_hash_split_follows_the_ratios() -> None:
    manifest = build_manifest(examples(5000), make_config(), DATASET)
    counts = {name: entry["count"] for name, entry in manifest["splits"].items()}
    assert 3850 <= counts["train"] <= 4150
    assert 420 <= counts["val"] <= 580
    assert 420 <= counts["test"] <= 580


def test_a_different_seed_gives_a_different_split() -> None:
    rows = examples(500)
    first = build_manifest(rows, make_config(seed=1), DATASET)
    second = build_manifest(rows, make_config(seed=2), DATASET)
    assert placement(first) != placement(second)


def test_record_order_does_not_change_a_split_without_duplicates() -> None:
    rows = examples(400)
    shuffled = rows[:]
    random.Random(5).shuffle(shuffled)
    assert (
        build_manifest(rows, make_config(), DATASET)["splits"]
        == build_manifest(shuffled, make_config(), DATASET)["splits"]
    )


def test_without_an_id_field_the_content_hash_is_the_id_and_it_is_said(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = [{"prompt": f"q{i}", "response": "a"} for i in range(60)]
    manifest = build_manifest(rows, make_config({"id_field": None}), DATASET)
    assert manifest["id_field"] is None and manifest["id_source"] == "content-sha256"
    assert set(placement(manifest)) == {content_hash(r) for r in rows}
    warned = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "warning: data.id_field is not set" in warned and "content hash" in warned


# ---------------------------------------------------------------- dedupe and leakage


def test_exact_duplicates_keep_the_first_in_file_order() -> None:
    rows = examples(60)
    rows.append({"id": "zz-copy", "prompt": "question 7", "response": "answer 7"})
    manifest = build_manifest(rows, make_config(), DATASET)
    assert "zz-copy" not in placement(manifest)
    (group,) = manifest["leakage"]["groups"]
    assert group["kind"] == "exact"
    assert group["first"] == "ex0007"
    assert group["members"] == {"ex0007": placement(manifest)["ex0007"], "zz-copy": "dropped"}
    assert manifest["leakage"]["dropped"] == 1
    assert manifest["totals"] == {"records": 61, "examples": 60, "dropped": 1}


def test_case_whitespace_and_unicode_form_variants_are_duplicates() -> None:
    rows = examples(60)
    rows += [
        {"id": "v1", "prompt": "  QUESTION\t 7 ", "response": "Answer  7"},
        {"id": "v2", "prompt": "Café au lait", "response": "yes"},
        {"id": "v3", "prompt": unicodedata.normalize("NFD", "café AU lait"), "response": "YES"},
    ]
    manifest = build_manifest(rows, make_config(), DATASET)
    groups = {g["first"]: g for g in manifest["leakage"]["groups"]}
    assert set(groups["ex0007"]["members"]) == {"ex0007", "v1"}
    assert set(groups["v2"]["members"]) == {"v2", "v3"}
    assert groups["v2"]["kind"] == "normalized"
    assert {"v1", "v3"}.isdisjoint(placement(manifest))


def test_keep_group_puts_every_member_of_a_group_in_one_split() -> None:
    rows = examples(300)
    rows += [{"id": f"dup{i}", "prompt": f"QUESTION {i % 30}", "response": f"answer {i % 30}"} for i in range(90)]
    manifest = build_manifest(rows, make_config(dedupe="keep-group"), DATASET)
    where = placement(manifest)
    assert len(where) == 390
    for group in manifest["leakage"]["groups"]:
        assert len({where[i] for i in group["members"]}) == 1
        assert set(group["members"].values()) == {where[group["first"]]}
    assert manifest["leakage"]["cross_split"] == []


def test_dedupe_off_keeps_all_and_reports_groups_that_straddle_splits() -> None:
    rows = examples(200) + [{"id": f"dup{i}", "prompt": f"question {i}", "response": f"answer {i}"} for i in range(200)]
    manifest = build_manifest(rows, make_config(dedupe="off"), DATASET)
    assert manifest["totals"]["examples"] == 400
    leaks = manifest["leakage"]["cross_split"]
    assert leaks, "200 pairs split at random must straddle somewhere"
    where = placement(manifest)
    for leak in leaks:
        ids = [i for members in leak["splits"].values() for i in members]
        assert len({where[i] for i in ids}) > 1
    assert [leak.as_dict() for leak in find_leakage(manifest, rows)] == leaks


def test_find_leakage_catches_a_manifest_edited_by_hand() -> None:
    rows = examples(100) + [{"id": "copy", "prompt": "Question 5", "response": "answer 5"}]
    manifest = build_manifest(rows, make_config(dedupe="keep-group"), DATASET)
    assert find_leakage(manifest, rows) == []
    home = placement(manifest)["copy"]
    other = next(n for n in ("train", "val", "test") if n != home)
    manifest["splits"][home]["ids"].remove("copy")
    manifest["splits"][other]["ids"].append("copy")
    (leak,) = find_leakage(manifest, rows)
    assert leak.placements == {home: ["ex0005"], other: ["copy"]}


def test_the_same_record_twice_is_one_example() -> None:
    rows = examples(50)
    rows.append(dict(rows[3]))
    manifest = build_manifest(rows, make_config(dedupe="off"), DATASET)
    assert manifest["totals"] == {"records": 51, "examples": 50, "dropped": 1}
    assert manifest["leakage"]["repeated_ids"] == {"ex0003": 1}


# ---------------------------------------------------------------- stratified and temporal


def test_stratified_split_has_exact_per_class_counts() -> None:
    sizes = {"a": 50, "b": 27, "c": 13}
    rows = [
        {"id": f"{label}{i}", "prompt": f"{label} {i}", "response": "r", "label": label}
        for label, size in sizes.items()
        for i in range(size)
    ]
    config = make_config({"label_field": "label"}, method="stratified")
    manifest = build_manifest(rows, config, DATASET)
    for label, size in sizes.items():
        expected = largest_remainder(size, config.split.ratios)
        assert {n: manifest["labels"][n].get(label, 0) for n in ("train", "val", "test")} == expected
    assert largest_remainder(13, config.split.ratios) == {"train": 11, "val": 1, "test": 1}
    # 21.6 / 2.7 / 2.7: the two .7 remainders win the two left over
    assert largest_remainder(27, config.split.ratios) == {"train": 21, "val": 3, "test": 3}
    assert largest_remainder(5, config.split.ratios) == {"train": 4, "val": 1, "test": 0}
    assert manifest["method"]["label_field"] == "label"
    assert manifest["method"]["small_classes"] == []


def test_stratified_warns_about_classes_too_small_for_every_split(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = examples(40, label="big") + [{"id": "r1", "prompt": "rare", "response": "x", "label": "rare"}]
    manifest = build_manifest(rows, make_config({"label_field": "label"}, method="stratified"), DATASET)
    assert manifest["method"]["small_classes"] == ["rare"]
    warned = " ".join(capsys.readouterr().err.split())
    assert "warning: 1 class(es) too small to appear in every split: 'rare'" in warned


def test_temporal_split_puts_the_oldest_in_train_and_records_the_cuts() -> None:
    rows = [
        {
            "id": f"e{i}",
            "prompt": f"p{i}",
            "response": "r",
            "date": f"2024-{1 + i // 28:02d}-{1 + i % 28:02d}",
        }
        for i in range(100)
    ]
    random.Random(1).shuffle(rows)
    manifest = build_manifest(rows, make_config({"date_field": "date"}, method="temporal"), DATASET)
    dates = {r["id"]: r["date"] for r in rows}
    train = [dates[i] for i in manifest["splits"]["train"]["ids"]]
    val = [dates[i] for i in manifest["splits"]["val"]["ids"]]
    test = [dates[i] for i in manifest["splits"]["test"]["ids"]]
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    assert max(train) <= min(val) and max(val) <= min(test)
    cuts = manifest["method"]["cuts"]
    assert cuts["train"]["first"].startswith(min(train)) and cuts["test"]["last"].startswith(max(test))
    assert cuts["val"]["first"].startswith(min(val))


def test_temporal_split_reads_times_with_and_without_zones() -> None:
    rows = examples(20)
    for i, row in enumerate(rows):
        row["date"] = f"2024-03-01T{i:02d}:00:00Z" if i % 2 else f"2024-03-01 {i:02d}:30:00"
    manifest = build_manifest(rows, make_config({"date_field": "date"}, method="temporal"), DATASET)
    assert manifest["splits"]["test"]["ids"] == ["ex0018", "ex0019"]


# ---------------------------------------------------------------- reading a manifest back


def test_load_split_reproduces_the_exact_split(tmp_path: Path) -> None:
    rows = examples(120)
    write_jsonl(tmp_path / "data.jsonl", rows)
    config = make_config()
    manifest = json.loads(manifest_text(make_split_manifest(config, tmp_path)))
    loaded = load_split(manifest, config, tmp_path)
    by_id = {r["id"]: r for r in rows}
    for name, entry in manifest["splits"].items():
        assert [r["id"] for r in loaded[name]] == entry["ids"]
        assert loaded[name] == [by_id[i] for i in entry["ids"]]


def test_load_split_names_the_first_changed_example(tmp_path: Path) -> None:
    rows = examples(120)
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    config = make_config()
    manifest = make_split_manifest(config, tmp_path)
    rows[90]["response"] = "edited"
    rows[30]["response"] = "edited"
    write_jsonl(data, rows)
    with pytest.raises(DatasetChangedError) as caught:
        load_split(manifest, config, tmp_path)
    assert caught.value.example_id == "ex0030"
    assert caught.value.split == placement(manifest)["ex0030"]
    assert "ex0030" in str(caught.value) and caught.value.exit_code == EXIT_INPUT
    assert caught.value.hint


def test_load_split_names_a_missing_example(tmp_path: Path) -> None:
    rows = examples(60)
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    config = make_config()
    manifest = make_split_manifest(config, tmp_path)
    write_jsonl(data, rows[:10] + rows[11:])
    with pytest.raises(DatasetChangedError, match="ex0010.*missing"):
        load_split(manifest, config, tmp_path)


def test_examples_added_later_are_left_out_of_an_old_manifest() -> None:
    rows = examples(80)
    manifest = build_manifest(rows, make_config(), DATASET)
    grown = rows + examples(100)[80:]
    selected = select_split(manifest, grown)
    assert {n: [r["id"] for r in v] for n, v in selected.items()} == {
        n: e["ids"] for n, e in manifest["splits"].items()
    }


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_runtime_reads_the_same_split_as_bundler(tmp_path: Path, fmt: str) -> None:
    pytest.importorskip("torch")
    from bundler.runtime.data import load_splits

    rows = examples(90, count=7, score=0.5)
    rows[5]["score"] = 2  # an int among floats: both sides must read rows the same way
    if fmt == "jsonl":
        rows[6]["extra"] = 1  # uneven columns too
        write_jsonl(tmp_path / "data.jsonl", rows)
    elif fmt == "csv":
        import csv

        with (tmp_path / "data.csv").open("w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        pyarrow = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pyarrow.Table.from_pylist(rows), tmp_path / "data.parquet")
    config = make_config({"path": f"data.{fmt}"})
    manifest = make_split_manifest(config, tmp_path)
    ours = load_split(manifest, config, tmp_path)
    theirs = load_splits(tmp_path, manifest["dataset"], manifest)
    assert theirs == ours
    assert sum(len(v) for v in ours.values()) == 90


def test_summary_shows_counts_label_balance_and_leakage() -> None:
    rows = examples(90, label="x")
    rows += [{"id": f"y{i}", "prompt": f"y {i}", "response": "r", "label": "y"} for i in range(30)]
    rows.append({"id": "copy", "prompt": "QUESTION 1", "response": "answer 1", "label": "x"})
    manifest = build_manifest(rows, make_config({"label_field": "label"}, method="stratified"), DATASET)
    summary = summarize(manifest)
    assert summary["schema"] == "bundler.splits.summary/1"
    assert summary["counts"] == {"train": 96, "val": 12, "test": 12}
    assert summary["labels"]["train"]["x"] == {"count": 72, "share": 0.75}
    assert summary["splits"]["val"] == {
        "count": 12,
        "root": manifest["splits"]["val"]["root"],
        "labels": {"x": 9, "y": 3},
    }
    assert summary["leakage"] == {
        "dedupe": "keep-one",
        "duplicate_groups": 1,
        "exact_groups": 0,
        "dropped": 1,
        "cross_split": 0,
    }
    json.dumps(summary)  # --json prints it as is


# ---------------------------------------------------------------- bad input: exit 2


def test_ratios_that_do_not_sum_to_one_are_a_config_error() -> None:
    text = '[project]\nname = "d"\n[model]\nid = "o/m"\n[data]\npath = "d.jsonl"\n'
    text += "[split]\nratios = { train = 0.8, val = 0.1, test = 0.2 }\n"
    with pytest.raises(ConfigError, match="sum to 1") as caught:
        parse_config(text)
    assert caught.value.exit_code == EXIT_INPUT


@pytest.mark.parametrize(
    ("rows", "config", "error", "match"),
    [
        ([{"key": "a", "prompt": "p"}], make_config(), DatasetError, "no ID field 'id'"),
        (
            examples(30),
            make_config({"label_field": "label"}, method="stratified"),
            SplitError,
            "label field",
        ),
        (examples(30), make_config(method="stratified"), SplitError, "needs a label field"),
        (examples(30), make_config(method="temporal"), SplitError, "needs a date field"),
        (
            examples(30),
            make_config({"date_field": "when"}, method="temporal"),
            SplitError,
            "no date field",
        ),
        (
            examples(30, when="last tuesday"),
            make_config({"date_field": "when"}, method="temporal"),
            SplitError,
            "cannot read a date",
        ),
        (
            examples(30) + [{"id": "ex0003", "prompt": "other", "response": "x"}],
            make_config(),
            DatasetError,
            "'ex0003' appears twice with different content",
        ),
        ([], make_config(), DatasetError, "no examples"),
        (
            examples(30) + [{"prompt": "no id"}],
            make_config(),
            DatasetError,
            "no value in the ID field",
        ),
        (examples(3), make_config(), SplitError, "would be empty"),
    ],
    ids=[
        "no-id-field",
        "no-label-field",
        "stratified-without-label",
        "temporal-without-date",
        "no-date-field",
        "unparseable-date",
        "duplicate-id",
        "empty",
        "record-without-id",
        "empty-split",
    ],
)
def test_bad_input_is_an_exit_2_error(
    rows: list[dict[str, Any]], config: BundleConfig, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as caught:
        build_manifest(rows, config, DATASET)
    assert caught.value.exit_code == EXIT_INPUT  # type: ignore[attr-defined]
    assert caught.value.hint  # type: ignore[attr-defined]


def test_a_zero_ratio_split_may_be_empty() -> None:
    manifest = build_manifest(examples(20), make_config(ratios={"train": 0.9, "val": 0.1, "test": 0.0}), DATASET)
    assert manifest["splits"]["test"]["count"] == 0
    assert manifest["splits"]["test"]["root"] == split_root({})


def test_a_value_with_no_json_form_is_a_dataset_error() -> None:
    import datetime

    rows = examples(10)
    rows[2]["when"] = datetime.datetime(2024, 1, 1)
    with pytest.raises(DatasetError, match="no JSON form"):
        build_manifest(rows, make_config(), DATASET)


# ---------------------------------------------------------------- the command line


def write_project(root: Path, rows: list[dict[str, Any]], split: str = "") -> Path:
    write_jsonl(root / "data.jsonl", rows)
    (root / "bundle.toml").write_text(
        '[project]\nname = "demo"\nseed = 2\n[model]\nid = "org/m"\n[data]\npath = "data.jsonl"\n' + split,
        encoding="utf-8",
    )
    return root


def test_bundler_split_writes_the_manifest_and_prints_counts(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bundler.cli import main

    project = write_project(tmp_path, examples(100))
    result = CliRunner().invoke(main, ["split", str(project), "--json", "--out", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    manifest = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    assert summary["schema"] == "bundler.splits.summary/1"
    assert summary["counts"] == {n: e["count"] for n, e in manifest["splits"].items()}
    assert manifest["method"]["seed"] == 2


def test_bundler_split_exits_2_when_a_split_would_be_empty(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bundler.cli import main

    project = write_project(tmp_path, examples(2))
    result = CliRunner().invoke(main, ["split", str(project)])
    assert result.exit_code == 2
    assert "would be empty" in result.output and "hint:" in result.output
    assert not (tmp_path / "splits.json").exists()
