"""`bundler diff` names every kind of change between two bundles, in a table and in JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bundler.audit.diff import diff_bundles, render_diff
from bundler.bundle import bag as fmt
from bundler.bundle.archive import export_bundle
from bundler.bundle.hashing import canonical_json
from bundler.recipe.source import archive_commit
from tests.conftest import git, run_cli

CONFIG = """[project]
name = "demo"
seed = {seed}

[train]
learning_rate = {lr}
max_steps = 40
seed = {seed}
"""
LOCK = "numpy==2.0.0 \\\n    --hash=sha256:{h}\nrich==13.0.0 \\\n    --hash=sha256:{h}\n"
LOCK_B = "numpy==2.1.0 \\\n    --hash=sha256:{h}\nclick==8.1.0 \\\n    --hash=sha256:{h}\n"


def code_repo(root: Path) -> tuple[Path, str, str]:
    """A real git repo with two commits: train.py changed, notes.md added, old.py removed."""
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "train.py").write_text("print(1)\n")
    (root / "old.py").write_text("x = 1\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "one")
    first = git(root, "rev-parse", "HEAD").strip()
    (root / "train.py").write_text("print(2)\n")
    (root / "notes.md").write_text("notes\n")
    (root / "old.py").unlink()
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "two")
    return root, first, git(root, "rev-parse", "HEAD").strip()


def make(
    root: Path,
    repo: Path,
    commit: str,
    *,
    seed: int,
    lr: float,
    lock: str,
    digest: str,
    splits: dict[str, list[str]],
    loss: float,
    torch: str,
) -> Path:
    recipe = root / "data" / "recipe"
    recipe.mkdir(parents=True)
    (recipe / "config.toml").write_text(CONFIG.format(seed=seed, lr=lr))
    (recipe / "requirements.lock").write_text(lock.format(h="a" * 64))
    (recipe / "image.lock.json").write_text(
        canonical_json(
            {"schema": "bundler.image/1", "name": "img", "reference": "127.0.0.1:5000/img:1", "digest": digest}
        )
    )
    (recipe / "source.json").write_text(
        canonical_json({"schema": "bundler.source/1", "commit": commit, "dirty": False})
    )
    (recipe / "code.tar").write_bytes(archive_commit(repo, commit, ""))
    (recipe / "splits.json").write_text(
        canonical_json(
            {
                "schema": "bundler.splits/1",
                "splits": {name: {"ids": sorted(ids), "count": len(ids)} for name, ids in splits.items()},
            }
        )
    )
    fmt.seal_bundle(root)
    staged = root.parent / f"{root.name}-run"
    staged.mkdir()
    (staged / "results.json").write_text(
        canonical_json({"schema": "bundler.results/1", "final_train_loss": loss, "eval": {"val_loss": loss + 0.1}})
    )
    (staged / "env.json").write_text(
        canonical_json(
            {
                "schema": "bundler.env/1",
                "libraries": {"torch": torch},
                "gpu": None,
                "determinism": {"tf32": {"value": False, "why": "wording " + torch}},
            }
        )
    )
    run_id = fmt.add_run(root, staged, {"run.json": b"{}\n"})
    from bundler.publish.provenance import write_provenance

    write_provenance(root, run_id)  # as `bundler run` records a run: with its statement
    return root


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    repo, first, second = code_repo(tmp_path / "repo")
    ids = [f"e{i}" for i in range(10)]
    a = make(
        tmp_path / "a",
        repo,
        first,
        seed=1,
        lr=0.003,
        lock=LOCK,
        digest="sha256:" + "1" * 64,
        splits={"train": ids[:8], "val": ids[8:9], "test": ids[9:]},
        loss=5.3,
        torch="2.13.0",
    )
    b = make(
        tmp_path / "b",
        repo,
        second,
        seed=2,
        lr=0.001,
        lock=LOCK_B,
        digest="sha256:" + "2" * 64,
        splits={"train": ids[:6] + ["e10"], "val": ids[6:9], "test": ids[9:]},
        loss=5.1,
        torch="2.14.0",
    )
    return a, b


def test_diff_names_config_values_and_seeds_separately(pair: tuple[Path, Path]) -> None:
    diff = diff_bundles(*pair)
    assert diff["config"] == [{"key": "train.learning_rate", "old": 0.003, "new": 0.001}]
    assert diff["seeds"] == [{"key": "project.seed", "old": 1, "new": 2}, {"key": "train.seed", "old": 1, "new": 2}]
    assert not diff["same_recipe"]


def test_diff_lists_dependencies_added_removed_and_changed(pair: tuple[Path, Path]) -> None:
    deps = diff_bundles(*pair)["dependencies"]
    assert deps == {
        "added": [{"name": "click", "version": "8.1.0"}],
        "removed": [{"name": "rich", "version": "13.0.0"}],
        "changed": [{"name": "numpy", "old": "2.0.0", "new": "2.1.0"}],
    }


def test_diff_shows_the_image_digest_and_the_code_files_changed(pair: tuple[Path, Path]) -> None:
    diff = diff_bundles(*pair)
    assert diff["image"]["changed"] and diff["image"]["new"]["digest"] == "sha256:" + "2" * 64
    code = diff["code"]
    assert code["changed"] and code["old"]["commit"] != code["new"]["commit"]
    assert code["files"] == {"added": ["notes.md"], "removed": ["old.py"], "modified": ["train.py"]}


def test_diff_counts_examples_moved_between_splits(pair: tuple[Path, Path]) -> None:
    splits = diff_bundles(*pair)["splits"]
    assert splits["moved"] == [{"from": "train", "to": "val", "count": 2}]
    assert splits["added"] == {"train": 1}
    assert splits["counts"]["train"] == {"old": 8, "new": 7}
    assert splits["counts"]["val"] == {"old": 1, "new": 3}


def test_diff_compares_environment_and_metrics_of_the_latest_runs(pair: tuple[Path, Path]) -> None:
    runs = diff_bundles(*pair)["runs"]
    assert runs["environment"] == [{"key": "libraries.torch", "old": "2.13.0", "new": "2.14.0"}]
    assert {r["key"] for r in runs["metrics"]} == {"final_train_loss", "eval.val_loss"}


def test_identical_bundles_have_no_differences(pair: tuple[Path, Path]) -> None:
    a, _ = pair
    diff = diff_bundles(a, a)
    assert diff["same_recipe"] and not diff["config"] and not diff["code"]["changed"]
    assert "no differences" in render_diff(diff)


def test_diff_cli_prints_a_table_and_versioned_json(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    a, b = pair
    table = run_cli("diff", str(a), str(b))
    assert table.returncode == 0, table.stderr
    for text in (
        "train.learning_rate",
        "0.003",
        "0.001",
        "numpy",
        "2.1.0",
        "notes.md",
        "moved train → val",
        "libraries.torch",
    ):
        assert text in table.stdout
    export_bundle(b, tmp_path / "b.tar")
    as_json = run_cli("diff", str(a), str(tmp_path / "b.tar"), "--json")
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["schema"] == "bundler.diff/1" and result["new"]["bundle_id"] == fmt.bundle_id_of(b)


def test_diff_of_a_path_that_is_not_a_bundle_is_exit_2(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    result = run_cli("diff", str(pair[0]), str(tmp_path))
    assert result.returncode == 2 and "not a bundle" in result.stderr and "Traceback" not in result.stderr
