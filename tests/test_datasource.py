"""Dataset loading (through `datasets`) and dataset.json, on real files in tmp_path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from bundler.errors import EXIT_INPUT, DatasetError, InputError
from bundler.recipe.config import BundleConfig
from bundler.recipe.datasource import describe_dataset, load_records


def make_config(path: str, **data: Any) -> BundleConfig:
    return BundleConfig.model_validate(
        {"project": {"name": "demo"}, "model": {"id": "org/model"}, "data": {"path": path, **data}}
    )


def test_jsonl_rows_come_back_exactly_as_written(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "prompt": "p", "response": "r", "n": 1, "date": "2024-01-02"},
        {"id": "b", "prompt": "p2", "response": "r2", "n": 2.5},
        {"id": "c", "prompt": "ünï", "response": "", "nested": {"k": [1, 2]}},
    ]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    loaded = load_records(make_config("data.jsonl"), tmp_path)
    # datasets' Arrow schema would add None for absent keys, widen 1 to 1.0 and parse the date
    assert loaded.records == rows


def test_csv_cells_stay_strings_as_csv_reader_gives_them(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text('id,prompt,response\n007,"hi, there",\n8,yo,3.0\n', encoding="utf-8")
    loaded = load_records(make_config("data.csv"), tmp_path)
    assert loaded.records == [
        {"id": "007", "prompt": "hi, there", "response": ""},
        {"id": "8", "prompt": "yo", "response": "3.0"},
    ]
    assert loaded.files.format == "csv"


def test_parquet_is_read_by_suffix(tmp_path: Path) -> None:
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pyarrow.table({"id": ["x", "y"], "prompt": ["a", "b"], "response": ["c", "d"]})
    pq.write_table(table, tmp_path / "data.parquet")
    loaded = load_records(make_config("data.parquet"), tmp_path)
    assert loaded.records == table.to_pylist()


def test_a_directory_of_files_is_read_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    (folder / "part").mkdir(parents=True)
    (folder / "b.jsonl").write_text('{"id": "2"}\n')
    (folder / "a.jsonl").write_text('{"id": "1"}\n')
    (folder / "part" / "c.jsonl").write_text('{"id": "3"}\n')
    (folder / "README.md").write_text("not data\n")
    loaded = load_records(make_config("data"), tmp_path)
    assert [r["id"] for r in loaded.records] == ["1", "2", "3"]
    assert sorted(loaded.sha256) == ["a.jsonl", "b.jsonl", "part/c.jsonl"]


def test_describe_dataset_names_files_relative_with_their_sha256(tmp_path: Path) -> None:
    data = tmp_path / "corpus" / "train.jsonl"
    data.parent.mkdir()
    data.write_text('{"id": "1", "prompt": "p"}\n')
    described = describe_dataset(make_config("corpus/train.jsonl"), tmp_path)
    assert described == {
        "schema": "bundler.dataset/1",
        "format": "jsonl",
        "source": "corpus/train.jsonl",
        "files": {"train.jsonl": hashlib.sha256(data.read_bytes()).hexdigest()},
    }
    assert str(tmp_path) not in json.dumps(described)


def test_a_configured_format_overrides_the_suffix(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text('{"id": "1"}\n{"id": "2"}\n')
    loaded = load_records(make_config("data.txt", format="jsonl"), tmp_path)
    assert [r["id"] for r in loaded.records] == ["1", "2"]


@pytest.mark.parametrize(
    ("files", "path", "match"),
    [
        ({}, "missing.jsonl", "dataset not found"),
        ({"data.jsonl": ""}, "data.jsonl", "no examples"),
        ({"data.jsonl": '{"key": "a"}\n'}, "data.jsonl", "no ID field 'id'"),
        ({"data.txt": "hello\n"}, "data.txt", "cannot tell the format"),
        ({"d/a.csv": "id\n1\n", "d/b.jsonl": '{"id": 1}\n'}, "d", "cannot tell the format"),
        ({"data.jsonl": '{"id": "a"}\nnot json\n'}, "data.jsonl", "cannot read dataset"),
        ({"empty/.keep": ""}, "empty", "no JSONL, CSV or Parquet files"),
        ({"data.csv": "id,prompt,response\n1,a,b\n2,short\n"}, "data.csv", "line 3: 2 cell"),
    ],
    ids=[
        "missing",
        "empty",
        "no-id-field",
        "unknown-suffix",
        "mixed-suffixes",
        "malformed",
        "empty-dir",
        "ragged-csv",
    ],
)
def test_unusable_data_is_a_dataset_error(tmp_path: Path, files: dict[str, str], path: str, match: str) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(DatasetError, match=match) as caught:
        load_records(make_config(path), tmp_path)
    assert caught.value.exit_code == EXIT_INPUT
    assert caught.value.hint


def test_a_hub_path_that_names_no_dataset_is_refused_with_a_next_step(tmp_path: Path) -> None:
    # Hub datasets themselves load (tests/test_hub_inputs.py, against a local Hub server).
    with pytest.raises(InputError, match="not a Hub dataset path") as caught:
        load_records(make_config("hf://org/name"), tmp_path)
    assert "hf://datasets/ORG/NAME" in caught.value.hint


def test_loading_leaves_no_cache_in_the_project(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text('{"id": "1"}\n')
    load_records(make_config("data.jsonl"), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]
