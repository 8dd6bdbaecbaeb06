"""QLoRA (`[lora] quantization = "4bit"`): refused clearly where it cannot run, recorded where it does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bundler.recipe.configfile import parse_config
from bundler.runtime.errors import RecipeInputError
from bundler.runtime.quant import check_quantization, quantization_settings
from bundler.runtime.specs import LoraSpec
from tests.fixtures.runtime_recipe import error_event, make_recipe, run_runtime


def lora_spec(quantization: str) -> LoraSpec:
    return LoraSpec(r=8, alpha=16, dropout=0.0, target_modules=("q_proj",), init_seed=0, quantization=quantization)


def test_4bit_on_the_cpu_stops_before_training_with_exit_3(tmp_path: Path, model_dir: Path) -> None:
    paths = make_recipe(tmp_path, model_dir=model_dir, config_overrides={"lora": {"quantization": "4bit"}})
    result = run_runtime(paths, tmp_path / "out")
    assert result.returncode == 3, result.stdout + result.stderr
    error = error_event(result)
    assert error["message"].startswith("4-bit needs a CUDA GPU and bitsandbytes")
    assert "the run is on cpu" in error["message"]
    assert 'quantization = "none"' in error["hint"]
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_unquantized_runs_pass_the_check_and_record_nothing() -> None:
    check_quantization(lora_spec("none"), torch.device("cpu"))
    assert quantization_settings(lora_spec("none"), torch.bfloat16) == {}


def test_unknown_quantization_in_a_recipe_is_refused() -> None:
    with pytest.raises(RecipeInputError, match="not known"):
        check_quantization(lora_spec("8bit"), torch.device("cpu"))


def test_4bit_settings_name_nf4_double_quant_compute_dtype_and_bitsandbytes() -> None:
    entry = quantization_settings(lora_spec("4bit"), torch.bfloat16)["quantization"]
    assert entry["value"]["mode"] == "4bit"
    assert entry["value"]["quant_type"] == "nf4"
    assert entry["value"]["double_quant"] is True
    assert entry["value"]["compute_dtype"] == "bfloat16"
    assert "bitsandbytes" in entry["value"]
    assert "bitsandbytes version and GPU architecture" in entry["why"]


def test_config_accepts_only_none_and_4bit() -> None:
    base = '[project]\nname = "d"\n[model]\nid = "o/b"\n[data]\npath = "d.jsonl"\n[lora]\n'
    assert parse_config(base + 'quantization = "4bit"\n').lora.quantization == "4bit"
    with pytest.raises(Exception, match="lora.quantization"):
        parse_config(base + 'quantization = "8bit"\n')


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_4bit_run_on_a_gpu_records_quantization(tmp_path: Path, model_dir: Path) -> None:
    import json

    pytest.importorskip("bitsandbytes")
    paths = make_recipe(
        tmp_path,
        model_dir=model_dir,
        config_overrides={"lora": {"quantization": "4bit"}, "train": {"device": "cuda", "max_steps": 3}},
    )
    # Keep what PYTHONPATH already holds (a --target install of bitsandbytes) after the recipe.
    pythonpath = os.pathsep.join(p for p in (str(paths["recipe"]), os.environ.get("PYTHONPATH")) if p)
    result = run_runtime(paths, tmp_path / "out", PYTHONPATH=pythonpath)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((tmp_path / "out" / "results.json").read_text())["quantization"] == "4bit"
    env = json.loads((tmp_path / "out" / "env.json").read_text())
    assert env["determinism"]["quantization"]["value"]["quant_type"] == "nf4"
    assert env["libraries"]["bitsandbytes"]
