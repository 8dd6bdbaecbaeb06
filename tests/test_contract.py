"""The host/runtime contract is written once (runtime/contract.py) and the runtime's specs restate no default."""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from bundler import errors
from bundler.recipe import dockerfile
from bundler.recipe.config import BundleConfig, LoraConfig, TrainConfig, dump_resolved
from bundler.runners import launch
from bundler.runtime import contract
from bundler.runtime.errors import RecipeInputError
from bundler.runtime.specs import DataSpec, LoraSpec, TrainSpec

ROOT = Path(__file__).resolve().parent.parent / "bundler"
MINIMAL = {
    "project": {"name": "p", "seed": 7},
    "model": {"source": "tiny", "id": "org/tiny"},
    "data": {"path": "data.jsonl"},
}


def resolved(raw: dict | None = None) -> dict:
    return tomllib.loads(dump_resolved(BundleConfig.model_validate(raw or MINIMAL)))


def test_the_host_reads_the_contract_from_the_runtime_source() -> None:
    assert launch.DETERMINISM_ENV is contract.DETERMINISM_ENV
    assert dockerfile.DETERMINISM_ENV is contract.DETERMINISM_ENV
    assert launch.EVENT_PREFIX is contract.EVENT_PREFIX and launch.ERROR_PREFIX is contract.ERROR_PREFIX
    assert (errors.EXIT_OK, errors.EXIT_CHECK_FAILED, errors.EXIT_INPUT) == (0, 1, 2)
    assert errors.EXIT_INPUT == contract.EXIT_INPUT and contract.RUNTIME_EXIT_INPUT != contract.EXIT_USAGE


def test_no_module_restates_a_contract_value() -> None:
    # PYTHONHASHSEED's "0" is too common a string to search for; the prefixes and cuBLAS's value are not.
    values = {contract.EVENT_PREFIX, contract.ERROR_PREFIX, contract.DETERMINISM_ENV["CUBLAS_WORKSPACE_CONFIG"]}
    restated = [
        f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.value!r}"
        for path in sorted(ROOT.rglob("*.py"))
        if path.name != "contract.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value in values
    ]
    assert restated == []


@pytest.mark.parametrize(("spec", "section"), [(TrainSpec, TrainConfig), (LoraSpec, LoraConfig)])
def test_a_spec_has_exactly_the_keys_of_its_config_section(spec: type, section: type) -> None:
    assert {f.name for f in dataclasses.fields(spec)} == set(section.model_fields)


def test_specs_carry_the_resolved_values_with_no_default_of_their_own() -> None:
    config = resolved()
    train, lora, data = TrainSpec.of(config), LoraSpec.of(config), DataSpec.of(config)
    defaults = BundleConfig.model_validate(MINIMAL).resolved()
    assert dataclasses.asdict(train) == defaults.train.model_dump()
    assert lora.dropout == defaults.lora.dropout and lora.target_modules == tuple(defaults.lora.target_modules)
    assert (train.seed, lora.init_seed) == (7, 7)
    assert data.label_field is None and data.prompt_template == defaults.data.prompt_template


@pytest.mark.parametrize("key", ["train.max_steps", "train.learning_rate", "lora.dropout", "data.prompt_template"])
def test_a_missing_key_is_an_input_error_that_names_it(key: str) -> None:
    config = resolved()
    section, name = key.split(".")
    del config[section][name]
    with pytest.raises(RecipeInputError, match=rf"config.toml has no {key}$"):
        {"train": TrainSpec, "lora": LoraSpec, "data": DataSpec}[section].of(config)


def test_the_runtime_reports_a_missing_key_on_its_error_line_and_exits_3(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    config = resolved()
    del config["train"]["batch_size"]
    import tomli_w

    (recipe / "config.toml").write_text(tomli_w.dumps(config), encoding="utf-8")
    for name in ("model.json", "dataset.json", "splits.json"):
        (recipe / name).write_text("{}", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BUNDLER_MODEL_DIR": str(tmp_path), "BUNDLER_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "runtime", str(recipe), str(tmp_path / "out")], env=env, capture_output=True, text=True
    )
    assert done.returncode == contract.RUNTIME_EXIT_INPUT
    (line,) = [x for x in done.stdout.splitlines() if x.startswith(contract.ERROR_PREFIX)]
    assert "config.toml has no train.batch_size" in line
