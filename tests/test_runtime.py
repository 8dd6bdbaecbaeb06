"""The training runtime, run as the runners run it: `python -m runtime` in a child process.

The tests that train carry `slow` (two_runs trains three times).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.fixtures.runtime_recipe import error_event, example_records, make_recipe, make_tiny, run_runtime, sha256_of


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> tuple[Path, Path, Path]:
    """The quickstart trained twice with seed 0 and once with seed 1."""
    root = tmp_path_factory.mktemp("runs")
    outs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        paths = make_recipe(root / name, seed=seed, model_dir=model_dir)
        result = run_runtime(paths, root / name / "out")
        assert result.returncode == 0, result.stdout + result.stderr
        outs.append(root / name / "out")
    return outs[0], outs[1], outs[2]


def _curve(out: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(ln).items() if k != "step_time"}
        for ln in (out / "metrics.jsonl").read_text().splitlines()
    ]


@pytest.mark.slow
def test_two_runs_give_identical_adapter_bytes_and_loss_curves(two_runs):
    a, b, _ = two_runs
    assert (a / "adapter/adapter_model.safetensors").read_bytes() == (
        b / "adapter/adapter_model.safetensors"
    ).read_bytes()
    assert (a / "adapter/adapter_config.json").read_bytes() == (b / "adapter/adapter_config.json").read_bytes()
    assert _curve(a) == _curve(b)
    ra, rb = (json.loads((o / "results.json").read_text()) for o in (a, b))
    assert ra["adapter_sha256"] == rb["adapter_sha256"] == sha256_of(a / "adapter/adapter_model.safetensors")
    assert ra["eval"] == rb["eval"]


@pytest.mark.slow
def test_another_seed_changes_the_adapter_and_the_curve(two_runs):
    a, _, c = two_runs
    ra, rc = (json.loads((o / "results.json").read_text()) for o in (a, c))
    assert ra["adapter_tensor_sha256"] != rc["adapter_tensor_sha256"]
    assert [m["loss"] for m in _curve(a) if "loss" in m] != [m["loss"] for m in _curve(c) if "loss" in m]


@pytest.mark.slow
def test_metrics_jsonl_has_one_line_per_step_and_val_evals(two_runs):
    a, _, _ = two_runs
    lines = [json.loads(ln) for ln in (a / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in lines if "split" not in m]
    evals = [m for m in lines if m.get("split") == "val"]
    assert [m["step"] for m in steps] == list(range(1, 31))
    assert all(set(m) == {"step", "loss", "grad_norm", "lr", "tokens", "step_time"} for m in steps)
    assert [m["step"] for m in evals] == [10, 20, 30]
    assert all(m["eval_loss"] > 0 for m in evals)
    assert steps[-1]["loss"] < steps[0]["loss"]


@pytest.mark.slow
def test_results_and_env_follow_the_contract(two_runs):
    a, _, _ = two_runs
    results = json.loads((a / "results.json").read_text())
    assert results["schema"] == "bundler.results/1"
    assert results["steps"] == 30 and results["tokens"] > 0
    assert set(results["eval"]) >= {"val_loss", "test_loss", "accuracy", "macro_f1"}
    assert 0.0 <= results["eval"]["accuracy"] <= 1.0
    # parameter counts and the base shape, for documents that must state them (bundler compliance)
    assert results["parameters"]["trainable"] > 0 and results["parameters"]["base"] > results["parameters"]["trainable"]
    assert results["architecture"]["model_type"] == "llama" and results["architecture"]["hidden_size"] > 0
    env = json.loads((a / "env.json").read_text())
    assert env["schema"] == "bundler.env/1" and env["runner"] == "host" and env["gpu"] is None
    assert env["determinism"]["torch.use_deterministic_algorithms"]["value"] is True
    assert all(set(v) == {"value", "why"} for v in env["determinism"].values())
    assert "torch" in env["libraries"]


def test_tiny_model_is_byte_identical_when_made_twice(tmp_path, model_dir):
    again = tmp_path / "again"
    make_tiny(again)
    assert {p.name: sha256_of(p) for p in again.iterdir()} == {p.name: sha256_of(p) for p in model_dir.iterdir()}


@pytest.mark.slow
def test_max_steps_env_trains_a_prefix_of_the_same_curve(tmp_path, model_dir, two_runs):
    paths = make_recipe(tmp_path, model_dir=model_dir)
    result = run_runtime(paths, tmp_path / "out", BUNDLER_MAX_STEPS="5")
    assert result.returncode == 0, result.stderr
    short = [m for m in _curve(tmp_path / "out") if "split" not in m]
    full = [m for m in _curve(two_runs[0]) if "split" not in m]
    assert short == full[:5]
    events = [json.loads(ln.split(" ", 1)[1]) for ln in result.stdout.splitlines() if ln.startswith("BUNDLER_EVENT")]
    assert events[0] == {"event": "step", "step": 1, "max_steps": 5, "loss": short[0]["loss"]}
    assert events[-1]["event"] == "done"


def test_unknown_target_module_exits_3_naming_the_choices(tmp_path, model_dir):
    paths = make_recipe(
        tmp_path,
        model_dir=model_dir,
        config_overrides={"lora": {"target_modules": ["q_proj", "qkv"]}},
    )
    result = run_runtime(paths, tmp_path / "out")
    assert result.returncode == 3
    error = error_event(result)
    assert "'qkv'" in error["message"] and "gate_proj" in error["hint"]


def test_sequence_longer_than_the_model_allows_exits_3(tmp_path, model_dir):
    # The host refuses this config before any work (recipe/config.py); the runtime guards bundles built
    # by a host that did not, so the recipe is edited after the host's validation.
    paths = make_recipe(tmp_path, model_dir=model_dir)
    config = paths["recipe"] / "config.toml"
    assert "max_seq_len = 128\n" in config.read_text()
    config.write_text(config.read_text().replace("max_seq_len = 128\n", "max_seq_len = 4096\n"))
    result = run_runtime(paths, tmp_path / "out")
    assert result.returncode == 3
    assert "512" in error_event(result)["message"]


def test_changed_model_file_exits_3_before_training(tmp_path, model_dir):
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    paths = make_recipe(tmp_path, model_dir=model)
    with open(model / "config.json", "a") as handle:
        handle.write("\n")
    result = run_runtime(paths, tmp_path / "out")
    assert result.returncode == 3
    assert "config.json" in error_event(result)["message"]
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_template_field_missing_from_data_exits_3(tmp_path, model_dir):
    paths = make_recipe(
        tmp_path,
        model_dir=model_dir,
        config_overrides={"data": {"prompt_template": "Topic {topic}\n{prompt}\n"}},
    )
    result = run_runtime(paths, tmp_path / "out")
    assert result.returncode == 3
    assert "'topic'" in error_event(result)["message"]


def test_changed_example_content_exits_3(tmp_path, model_dir):
    paths = make_recipe(tmp_path, model_dir=model_dir)
    rows = example_records()
    rows[0]["response"] = "changed"
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    (paths["data"] / "data.jsonl").write_text(lines)
    dataset = json.loads((paths["recipe"] / "dataset.json").read_text())
    dataset["files"]["data.jsonl"] = sha256_of(paths["data"] / "data.jsonl")
    (paths["recipe"] / "dataset.json").write_text(json.dumps(dataset))
    result = run_runtime(paths, tmp_path / "out")
    assert result.returncode == 3
    assert "changed" in error_event(result)["message"]


def test_out_of_memory_hint_names_the_settings_to_lower():
    from bundler.runtime.errors import out_of_memory_error

    config = {"train": {"batch_size": 16, "max_seq_len": 2048}, "lora": {"r": 64}}
    error = out_of_memory_error(config, "CUDA out of memory. Tried to allocate 2.00 GiB")
    assert error.kind == "oom" and "Tried to allocate 2.00 GiB" in error.message
    for setting in (
        "train.batch_size (now 16)",
        "train.grad_accum",
        "train.max_seq_len (now 2048)",
        "lora.r",
    ):
        assert setting in error.hint


def test_csv_dataset_gives_the_same_records_as_jsonl(tmp_path):
    from bundler.runtime.data import read_records

    rows = [
        {"id": "a", "prompt": "p, with comma", "response": "r\\nline"},
        {"id": "b", "prompt": "q", "response": "s"},
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.csv").write_text('id,prompt,response\na,"p, with comma",r\\nline\nb,q,s\n')
    assert read_records(tmp_path / "d.csv", "auto") == read_records(tmp_path / "d.jsonl", "auto") == rows
