"""`bundler check`: reference outputs recorded by a real quickstart run, checked through the real CLI.

The comparison tests work on reference files written here; everything else uses one real quickstart
build (module scope) and a real local Hub server for the --adapter ORG/NAME case.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bundler.audit.check import (
    DIVERGED,
    EQUIVALENT,
    IDENTICAL,
    ReferenceOutputs,
    Tolerances,
    compare_reference,
)
from bundler.bundle.hashing import hash_tree, sha256_file
from bundler.bundle.verify import verify_bundle
from tests.conftest import QUICKSTART, make_git_project, run_cli
from tests.fixtures.hub_server import HubServer, hub_env

REPO_ID = "org/quickstart-adapter"


# --- the comparison, on reference files written here ---


def _reference(logliks: dict[str, float], *, predicted: str = "pos", margins: float = 0.5) -> str:
    rows: list[dict] = [{"kind": "header", "schema": "bundler.reference/1", "split": "test"}]
    for example_id, value in sorted(logliks.items()):
        rows.append(
            {
                "kind": "example",
                "id": example_id,
                "loglik": value,
                "tokens": 4,
                "label": "pos",
                "label_scores": {"neg": value - 1.0, "pos": value},
                "predicted": predicted,
            }
        )
    rows.append(
        {
            "kind": "probe",
            "id": "a",
            "index": 0,
            "tokens": [5, 6, 7],
            "text": "xyz",
            "logprobs": [-0.1, -0.2, -0.3],
            "margins": [margins] * 3,
        }
    )
    accuracy = 1.0 if predicted == "pos" else 0.0
    rows.append({"kind": "summary", "accuracy": accuracy, "macro_f1": accuracy})
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def _compare(reference: str, check: str):
    return compare_reference(
        ReferenceOutputs.parse(reference, "reference"), ReferenceOutputs.parse(check, "check"), Tolerances()
    )


def test_equal_outputs_are_identical():
    text = _reference({"a": -3.0, "b": -4.0})
    result = _compare(text, text)
    assert result.verdict == IDENTICAL and result.worst == [] and result.problems == []


def test_loglik_changes_within_the_per_token_bound_are_equivalent():
    result = _compare(_reference({"a": -3.0, "b": -4.0}), _reference({"a": -3.0005, "b": -4.0}))
    assert result.verdict == EQUIVALENT
    assert result.worst[0]["id"] == "a" and result.worst[0]["delta"] == pytest.approx(5e-4)
    assert result.worst[0]["bound"] == pytest.approx(4e-3)  # 1e-3 nats x 4 tokens


def test_changes_beyond_the_bound_diverge_and_the_worst_example_comes_first():
    result = _compare(_reference({"a": -3.0, "b": -4.0, "c": -5.0}), _reference({"a": -3.01, "b": -4.5, "c": -5.0}))
    assert result.verdict == DIVERGED
    assert [w["id"] for w in result.worst][:2] == ["b", "b"]  # loglik and its label score
    assert result.over_bound == 6  # loglik and both label scores of a and b


def test_a_task_metric_change_beyond_a_tenth_of_a_percent_diverges():
    result = _compare(_reference({"a": -3.0}), _reference({"a": -3.0}, predicted="neg"))
    assert result.verdict == DIVERGED and result.label_flips == 1
    assert any(p.startswith("accuracy 1.0 -> 0.0") for p in result.problems)


def test_a_greedy_flip_at_a_near_tie_is_equivalent_but_a_confident_one_diverges():
    def flipped(text: str) -> str:
        return text.replace('"tokens": [5, 6, 7]', '"tokens": [5, 9, 7]')

    near = _reference({"a": -3.0}, margins=1e-4)
    result = _compare(near, flipped(near))
    assert result.verdict == EQUIVALENT and result.probes[0]["near_tie"]
    assert result.probes[0]["first_difference"] == 1
    sure = _reference({"a": -3.0}, margins=0.5)
    assert _compare(sure, flipped(sure)).verdict == DIVERGED


def test_a_run_that_predates_reference_outputs_exits_2(tmp_path):
    from tests.fixtures.bundles import make_card_bundle

    bundle, _ = make_card_bundle(tmp_path / "old")
    result = run_cli("check", str(bundle))
    assert result.returncode == 2, result.stderr
    assert "predates reference outputs" in result.stderr


# --- one real quickstart build ---


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("check")
    project = make_git_project(QUICKSTART, root / "quickstart")
    result = run_cli("build", str(project), "--out", str(root / "bundle"), "--json")
    assert result.returncode == 0, result.stderr
    return root / "bundle", json.loads(result.stdout)["run_id"]


def _check(bundle: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
    result = run_cli("check", str(bundle), "--json", *args, env=env)
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, report, result.stderr


@pytest.mark.slow
def test_every_run_records_reference_outputs_hashed_like_its_other_outputs(built):
    bundle, run_id = built
    run_dir = bundle / "data" / "runs" / run_id
    reference = run_dir / "reference_outputs.jsonl"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["reference_outputs_sha256"] == sha256_file(reference)
    manifest = (bundle / "manifest-sha256.txt").read_text()
    assert f"{sha256_file(reference)}  data/runs/{run_id}/reference_outputs.jsonl" in manifest
    rows = [json.loads(line) for line in reference.read_text().splitlines()]
    examples = [r for r in rows if r["kind"] == "example"]
    assert rows[0]["split"] == "test" and len(examples) == rows[0]["examples"] > 0
    assert all(set(e["label_scores"]) == set(rows[0]["candidates"]) for e in examples)
    # An example whose prompt fills max_seq_len keeps no response token: it scores 0 over 0 tokens.
    assert all(e["loglik"] <= 0 and (e["tokens"] > 0) == (e["loglik"] < 0) for e in examples)
    assert sum(e["tokens"] > 0 for e in examples) > len(examples) // 2
    probes = [r for r in rows if r["kind"] == "probe"]
    assert len(probes) == 3 and all(0 < len(p["tokens"]) <= 16 for p in probes)
    assert rows[-1]["accuracy"] == results["eval"]["accuracy"]


@pytest.mark.slow
def test_the_card_gives_the_check_command_and_the_reference_hash(built):
    bundle, run_id = built
    card = (bundle / "data" / "runs" / run_id / "README.md").read_text()
    sha = sha256_file(bundle / "data" / "runs" / run_id / "reference_outputs.jsonl")
    assert f"bundler check <bundle> --run {run_id}" in card
    assert f"reference_outputs.jsonl (sha256 {sha})" in card


@pytest.mark.slow
def test_the_runs_own_adapter_checks_identical_and_the_bundle_is_untouched(built):
    bundle, run_id = built
    before = hash_tree(bundle)
    code, report, stderr = _check(bundle)
    assert code == 0, stderr
    assert report["schema"] == "bundler.check/1" and report["verdict"] == IDENTICAL
    assert report["run_id"] == run_id and report["adapter"]["matches_run"]
    assert report["reference_sha256"] == report["check_sha256"]
    assert report["seconds"]["check"] > 0 and report["ratio_to_run"] is not None
    assert hash_tree(bundle) == before and verify_bundle(bundle).ok


@pytest.mark.slow
def test_the_host_runner_checks_the_same_adapter(built):
    bundle, _ = built
    code, report, stderr = _check(bundle, "--runner", "host", "--allow-drift")
    assert code == 0, stderr
    assert report["runner"] == "host" and report["verdict"] in (IDENTICAL, EQUIVALENT)


def _adapter_copy(bundle: Path, run_id: str, target: Path) -> Path:
    shutil.copytree(bundle / "data" / "runs" / run_id / "adapter", target)
    return target


@pytest.mark.slow
def test_an_adapter_for_another_base_model_exits_2(built, tmp_path):
    bundle, run_id = built
    adapter = _adapter_copy(bundle, run_id, tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "someone/other-model"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    code, _, stderr = _check(bundle, "--adapter", str(adapter), "--allow-mismatch")
    assert code == 2
    assert "does not match the bundle's base model" in stderr and "someone/other-model" in stderr


def _perturbed(adapter: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(adapter / "adapter_model.safetensors"))
    name = sorted(k for k in state if "lora_B" in k)[0]
    state[name] = state[name] + 0.5
    save_file(state, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})


@pytest.mark.slow
def test_a_changed_adapter_is_refused_then_diverges_with_allow_mismatch(built, tmp_path):
    bundle, run_id = built
    adapter = _adapter_copy(bundle, run_id, tmp_path / "adapter")
    _perturbed(adapter)
    code, _, stderr = _check(bundle, "--adapter", str(adapter))
    assert code == 2 and "adapter_model.safetensors" in stderr and "--allow-mismatch" in stderr
    assert "adapter_config.json" not in stderr.split("hint:")[0]
    code, report, stderr = _check(bundle, "--adapter", str(adapter), "--allow-mismatch")
    assert code == 1, stderr
    assert report["verdict"] == DIVERGED and report["adapter"]["mismatched_files"] == ["adapter_model.safetensors"]
    assert report["worst"] and report["worst"][0]["delta"] > report["worst"][0]["bound"]
    text = run_cli("check", str(bundle), "--adapter", str(adapter), "--allow-mismatch")
    assert text.returncode == 1 and "worst examples:" in text.stdout and "DIVERGED" in text.stderr


def _publish(server: HubServer, bundle: Path, run_id: str, changed: Path | None = None) -> None:
    adapter = bundle / "data" / "runs" / run_id / "adapter"
    files = {n: (adapter / n).read_bytes() for n in ("adapter_config.json", "adapter_model.safetensors")}
    if changed is not None:
        files["adapter_model.safetensors"] = changed.read_bytes()
    server.commit_files(REPO_ID, files)


@pytest.mark.slow
def test_an_adapter_downloaded_from_the_hub_checks_identical(built, hub, tmp_path):
    bundle, run_id = built
    server, env = hub, hub_env(hub, tmp_path)
    _publish(server, bundle, run_id)
    code, report, stderr = _check(bundle, "--adapter", REPO_ID, env=env)
    assert code == 0, stderr
    assert report["verdict"] == IDENTICAL
    assert report["adapter"]["kind"] == "hub" and report["adapter"]["revision"] == server.head(REPO_ID).oid
    assert server.calls("resolve") >= 2
    assert not (Path(env["HF_HOME"]) / "hub").exists()  # downloaded into a temporary cache only


@pytest.mark.slow
def test_a_hub_adapter_that_differs_from_the_run_is_refused_naming_the_file(built, hub, tmp_path):
    bundle, run_id = built
    server, env = hub, hub_env(hub, tmp_path)
    changed = _adapter_copy(bundle, run_id, tmp_path / "adapter")
    _perturbed(changed)
    _publish(server, bundle, run_id, changed=changed / "adapter_model.safetensors")
    code, _, stderr = _check(bundle, "--adapter", REPO_ID, env=env)
    assert code == 2
    assert f"the adapter from {REPO_ID} is not the one run {run_id[:12]} produced" in stderr
    assert "adapter_model.safetensors" in stderr


def test_no_check_module_imports_torch_at_the_top_level():
    import subprocess
    import sys

    code = "import sys, bundler.audit.check, bundler.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}, check=True)
    assert out.stdout.strip() == "False"
