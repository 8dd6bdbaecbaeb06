"""A bundle's ID covers what determines the result and nothing else: no origin URL, branch or host path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bundler.bundle.bag import read_bag_info
from tests.conftest import QUICKSTART, git, make_git_project, run_cli


def build_no_run(project: Path, out: Path, cwd: Path | None = None) -> dict:
    result = run_cli("build", str(project), "--out", str(out), "--no-run", "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def recipe_text(bundle: Path) -> str:
    recipe = bundle / "data" / "recipe"
    files = [p for p in sorted(recipe.rglob("*")) if p.is_file() and p.suffix != ".tar"]
    return "".join(p.read_text(errors="replace") for p in files)


def test_two_clones_with_other_remotes_branches_and_paths_give_the_same_id(tmp_path: Path) -> None:
    origin = make_git_project(QUICKSTART, tmp_path / "origin")
    one = tmp_path / "alice" / "work" / "quickstart"
    two = tmp_path / "ci" / "checkout"
    git(tmp_path, "clone", "-q", str(origin), str(one))
    git(tmp_path, "clone", "-q", str(origin), str(two))
    git(one, "remote", "set-url", "origin", "https://alice:s3cr3t-passw0rd@git.example.com/team/quickstart.git")
    git(two, "remote", "remove", "origin")
    git(two, "checkout", "-q", "-b", "release/1.0")

    first = build_no_run(one, tmp_path / "out-one")
    second = build_no_run(two, tmp_path / "elsewhere" / "out-two")
    assert first["bundle_id"] == second["bundle_id"]

    info_one, info_two = read_bag_info(tmp_path / "out-one"), read_bag_info(tmp_path / "elsewhere" / "out-two")
    assert info_one["Source-Origin"] == "https://git.example.com/team/quickstart.git"  # credentials stripped
    assert info_one["Source-Branch"] == "main" and info_two["Source-Branch"] == "release/1.0"
    assert "Source-Origin" not in info_two
    for bundle in (tmp_path / "out-one", tmp_path / "elsewhere" / "out-two"):
        source = json.loads((bundle / "data" / "recipe" / "source.json").read_text())
        assert "repo" not in source and "branch" not in source
        assert str(tmp_path) not in recipe_text(bundle)
        assert "s3cr3t" not in (bundle / "bag-info.txt").read_text()


@pytest.mark.parametrize("style", ["dotdot", "absolute"])
def test_a_data_path_outside_the_project_puts_no_host_path_in_the_recipe(tmp_path: Path, style: str) -> None:
    repo = tmp_path / "repo"
    project = repo / "project"
    shutil.copytree(QUICKSTART, project)
    (repo / "shared").mkdir()
    shutil.move(project / "data" / "reviews.jsonl", repo / "shared" / "reviews.jsonl")
    given = "../shared/reviews.jsonl" if style == "dotdot" else str(repo / "shared" / "reviews.jsonl")
    config = project / "bundle.toml"
    config.write_text(config.read_text().replace('"data/reviews.jsonl"', json.dumps(given)))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "project in a subfolder, data beside it")

    out = tmp_path / "b"
    build_no_run(project, out)
    dataset = json.loads((out / "data" / "recipe" / "dataset.json").read_text())
    assert dataset["source"] == "(outside the project)/reviews.jsonl"
    assert str(tmp_path) not in recipe_text(out)
    assert 'path = "(outside the project)/reviews.jsonl"' in (out / "data" / "recipe" / "config.toml").read_text()


@pytest.mark.slow
def test_relative_bundle_paths_work_for_run_replay_and_verify(tmp_path: Path, quickstart: Path) -> None:
    build_no_run(quickstart, Path("b"), cwd=tmp_path)
    ran = run_cli("run", "b", "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "No module named runtime" not in ran.stderr
    replayed = run_cli("replay", "b", "--json", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    verified = run_cli("verify", "b", cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
