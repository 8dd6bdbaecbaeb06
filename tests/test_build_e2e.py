"""`bundler build` on the quickstart, end to end on the embedded venv runner (CPU, deterministic)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bundler.bundle import bag as fmt
from bundler.bundle.hashing import sha256_file
from bundler.bundle.verify import verify_bundle
from tests.conftest import git, run_cli

pytestmark = pytest.mark.slow


def build(project: Path, out: Path, *extra: str) -> dict:
    result = run_cli("build", str(project), "--out", str(out), "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def adapter_of(bundle: Path, run_id: str) -> Path:
    return bundle / "data" / "runs" / run_id / "adapter" / "adapter_model.safetensors"


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path, dict]:
    from tests.conftest import QUICKSTART, make_git_project

    root = tmp_path_factory.mktemp("e2e")
    project = make_git_project(QUICKSTART, root / "quickstart")
    first = build(project, root / "one")
    time.sleep(1.1)  # a later time must not change anything hashed
    second = build(project, root / "elsewhere" / "two")
    return root / "one", first, root / "elsewhere" / "two", second


def test_same_project_gives_the_same_bundle_id_anywhere_anytime(two_builds) -> None:
    _, first, _, second = two_builds
    assert first["bundle_id"] == second["bundle_id"]
    assert len(first["bundle_id"]) == 64


def test_two_builds_give_a_bit_identical_adapter(two_builds) -> None:
    one, first, two, second = two_builds
    a, b = adapter_of(one, first["run_id"]), adapter_of(two, second["run_id"])
    assert a.stat().st_size > 1000
    assert sha256_file(a) == sha256_file(b)
    metrics_a = (one / "data" / "runs" / first["run_id"] / "metrics.jsonl").read_text().splitlines()
    metrics_b = (two / "data" / "runs" / second["run_id"] / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line).get("loss") for line in metrics_a] == [json.loads(line).get("loss") for line in metrics_b]


def test_built_bundle_has_the_design_layout_and_verifies(two_builds) -> None:
    one, first, _, _ = two_builds
    recipe = one / "data" / "recipe"
    for name in (
        "config.toml",
        "requirements.in",
        "requirements.lock",
        "image.lock.json",
        "Dockerfile",
        "source.json",
        "code.tar",
        "splits.json",
        "model.json",
        "dataset.json",
        "runtime/__main__.py",
    ):
        assert (recipe / name).is_file(), name
    run = one / "data" / "runs" / first["run_id"]
    for name in (
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "metrics.jsonl",
        "env.json",
        "results.json",
        "run.json",
        "README.md",
    ):
        assert (run / name).is_file(), name
    results = json.loads((run / "results.json").read_text())
    assert results["adapter_sha256"] == sha256_file(run / "adapter" / "adapter_model.safetensors")
    assert verify_bundle(one).ok
    assert run_cli("verify", str(one)).returncode == 0
    card = (run / "README.md").read_text()
    assert first["bundle_id"] in card and first["run_id"] in card
    assert str(one) not in card, "the card must not carry a local path"


def test_changing_one_config_value_changes_the_bundle_id(two_builds, tmp_path: Path) -> None:
    from tests.conftest import QUICKSTART, make_git_project

    _, first, _, _ = two_builds
    project = make_git_project(QUICKSTART, tmp_path / "qs")
    config = project / "bundle.toml"
    config.write_text(config.read_text().replace("learning_rate = 3e-3", "learning_rate = 2e-3"))
    git(project, "commit", "-qam", "lr")
    other = build(project, tmp_path / "out", "--no-run")
    assert other["bundle_id"] != first["bundle_id"] and other["run_id"] is None


def test_out_directory_holding_a_bundle_is_refused(two_builds, quickstart: Path) -> None:
    one, _, _, _ = two_builds
    before = sorted(p.name for p in one.iterdir())
    result = run_cli("build", str(quickstart), "--out", str(one))
    assert result.returncode == 2 and "already exists" in result.stderr
    assert sorted(p.name for p in one.iterdir()) == before


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda p: (p / "data" / "reviews.jsonl").unlink(), "reviews.jsonl"),
        (
            lambda p: (p / "bundle.toml").write_text(
                (p / "bundle.toml").read_text().replace('id_field = "id"', 'id_field = "uid"')
            ),
            "uid",
        ),
        (lambda p: (p / "bundle.toml").write_text("[project\n"), "TOML"),
        (
            lambda p: (p / "bundle.toml").write_text(
                (p / "bundle.toml").read_text().replace("batch_size", "batchsize")
            ),
            "did you mean",
        ),
    ],
    ids=["missing-dataset", "missing-id-field", "bad-toml", "unknown-key"],
)
def test_bad_input_exits_2_and_writes_nothing(quickstart: Path, tmp_path: Path, edit, expected: str) -> None:
    edit(quickstart)
    git(quickstart, "add", "-A")
    git(quickstart, "commit", "-qm", "break it")
    out = tmp_path / "out"
    result = run_cli("build", str(quickstart), "--out", str(out), "--no-run")
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "no temp directory left behind"


def test_stale_lock_fails_the_build_with_exit_1(quickstart: Path, tmp_path: Path) -> None:
    requirements = quickstart / "requirements.in"
    requirements.write_text(requirements.read_text() + "tqdm\n")
    git(quickstart, "commit", "-qam", "add tqdm")
    result = run_cli("build", str(quickstart), "--out", str(tmp_path / "out"), "--no-run")
    assert result.returncode == 1 and "stale" in result.stderr and "bundler lock" in result.stderr
    assert not (tmp_path / "out").exists()


def test_dirty_tree_is_refused_then_recorded_as_a_patch_with_allow_dirty(quickstart: Path, tmp_path: Path) -> None:
    (quickstart / "notes.txt").write_text("uncommitted\n")
    refused = run_cli("build", str(quickstart), "--out", str(tmp_path / "a"), "--no-run")
    assert refused.returncode == 2 and "notes.txt" in refused.stderr
    allowed = build(quickstart, tmp_path / "b", "--no-run", "--allow-dirty")
    recipe = tmp_path / "b" / "data" / "recipe"
    source = json.loads((recipe / "source.json").read_text())
    assert source["dirty"] is True and source["dirty_files"] == ["notes.txt"]
    assert b"uncommitted" in (recipe / "code.patch").read_bytes()
    assert allowed["bundle_id"] == fmt.bundle_id_of(tmp_path / "b")
