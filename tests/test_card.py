"""The model card: lineage from the bundle alone, valid Hub metadata, no local path or secret."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bundler.bundle import bag as fmt
from bundler.bundle.verify import verify_bundle
from bundler.errors import CardMetadataError
from bundler.publish.card import NOT_RECORDED, render_card, write_card
from tests.fixtures.bundles import make_card_bundle


def card_text(bundle: Path, run_id: str) -> str:
    return (bundle / "data" / "runs" / run_id / "README.md").read_text(encoding="utf-8")


def test_card_metadata_names_the_base_model_license_tags_and_eval_results(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    bundle, run_id = make_card_bundle(tmp_path)
    card = ModelCard(card_text(bundle, run_id))
    meta = card.data.to_dict()
    assert meta["base_model"] == "TinyOrg/tiny-llama"
    assert meta["library_name"] == "peft"
    assert meta["license"] == "apache-2.0"
    assert set(meta["tags"]) >= {"lora", "reproducible", "bundler"}
    assert "datasets" not in meta  # the dataset is a local file, not a Hub dataset
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("validation", "loss"): 1.5, ("test", "loss"): 1.625}


def test_card_lists_hub_dataset_when_the_dataset_came_from_the_hub(tmp_path: Path) -> None:
    bundle, run_id = make_card_bundle(tmp_path, dataset_source="hf://datasets/SomeOrg/support-tickets")
    from huggingface_hub import ModelCard

    assert ModelCard(card_text(bundle, run_id)).data.datasets == ["SomeOrg/support-tickets"]


def test_card_body_carries_the_lineage_and_commands(tmp_path: Path) -> None:
    bundle, run_id = make_card_bundle(tmp_path)
    text = card_text(bundle, run_id)
    for expected in [
        fmt.bundle_id_of(bundle),
        run_id,
        "c0ffee" + "0" * 34,
        "sha256:" + "44" * 32,
        "0123456789abcdef0123456789abcdef01234567",
        "33" * 32,
        "a" * 64,
        "| val | 10 |",
        "55" * 32,
        "project=7, split=7, train=7, lora_init=7",
        "train.learning_rate",
        "lora.target_modules",
        "torch.use_deterministic_algorithms",
        "NVIDIA H100 80GB HBM3",
        "compute capability 9.0",
        "bundler verify <bundle>",
        f"bundler replay <bundle> --run {run_id}",
        "PeftModel.from_pretrained",
        "4-bit quantization: **no**",
        "![Training and validation loss",
    ]:
        assert expected in text, expected
    lock_sha = fmt.sha256_file(bundle / "data" / "recipe" / "requirements.lock")
    assert lock_sha in text


def test_card_says_when_4bit_quantization_was_used(tmp_path: Path) -> None:
    bundle, run_id = make_card_bundle(tmp_path, quantization="4bit")
    assert "4-bit quantization: **yes**" in card_text(bundle, run_id)


def test_card_never_contains_a_local_path_or_a_secret(tmp_path: Path) -> None:
    bundle, run_id = make_card_bundle(tmp_path)
    # A secret planted where the card reads: an env.json library version and a determinism note.
    env_path = bundle / "data" / "runs" / run_id / "env.json"
    env = json.loads(env_path.read_text())
    secret = "hf_" + "Q" * 34
    env["libraries"]["leaky"] = secret
    env["determinism"]["note"] = {"value": str(tmp_path / "cache"), "why": f"token {secret}"}
    env_path.write_text(json.dumps(env))
    write_card(bundle, run_id)
    text = card_text(bundle, run_id)
    assert str(tmp_path) not in text
    assert "/home/alice" not in text and "/usr/bin" not in text
    assert secret not in text
    assert "(withheld: local path)" in text


def test_card_of_an_older_bundle_says_not_recorded_instead_of_failing(tmp_path: Path) -> None:
    bundle, run_id = make_card_bundle(
        tmp_path,
        omit=(
            "splits.json",
            "image.lock.json",
            "source.json",
            "requirements.lock",
            "env.json",
            "metrics.jsonl",
            "results.json",
            "config.toml",
        ),
    )
    path = write_card(bundle, run_id)
    text = path.read_text()
    assert "| Code commit | not recorded |" in text
    assert "| Base image digest | not recorded |" in text
    assert "Split manifest: not recorded." in text
    assert "Loss curve: not recorded." in text
    assert "Determinism settings: not recorded." in text
    assert not (path.parent / "loss.png").exists()
    assert NOT_RECORDED in text


def test_writing_the_card_keeps_the_bundle_verifiable(tmp_path: Path) -> None:
    bundle, run_id = make_card_bundle(tmp_path)
    assert verify_bundle(bundle).ok
    (bundle / "data" / "runs" / run_id / "README.md").unlink(missing_ok=True)
    fmt.reseal_run(bundle, run_id)
    write_card(bundle, run_id)
    assert verify_bundle(bundle).findings == []


def test_card_and_loss_image_are_byte_identical_across_processes(tmp_path: Path) -> None:
    bundle, run_id = make_card_bundle(tmp_path)
    code = (
        "import sys, hashlib; from pathlib import Path; from bundler.publish.card import render_card; "
        "c = render_card(Path(sys.argv[1]), sys.argv[2]); "
        "print(hashlib.sha256(c.text.encode()).hexdigest(), hashlib.sha256(c.loss_png).hexdigest())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code, str(bundle), run_id],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for _ in range(2)
    }
    assert len(outputs) == 1
    card = render_card(bundle, run_id)
    assert card.loss_png is not None and card.loss_png.startswith(b"\x89PNG")
    assert b"matplotlib" not in card.loss_png  # no Software chunk naming the version


def test_strict_card_refuses_a_base_model_that_is_a_local_path(tmp_path: Path) -> None:
    bundle, run_id = make_card_bundle(tmp_path, model_id="/models/llama")
    with pytest.raises(CardMetadataError, match="base_model"):
        render_card(bundle, run_id, strict=True)
    # Writing the card into the bundle still works; the path is simply left out.
    assert "/models/llama" not in card_text(bundle, run_id)


def test_strict_card_refuses_an_invalid_license(tmp_path: Path) -> None:
    bundle, run_id = make_card_bundle(tmp_path, license="Not A License")
    with pytest.raises(CardMetadataError, match="license"):
        render_card(bundle, run_id, strict=True)
