"""Code packaging from real git repositories: commit and tree, bare origin URL, dirty policy, submodules, archive."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from bundler.errors import SourceError
from bundler.recipe.source import archive_commit, describe_source, strip_credentials
from tests.conftest import git


def repo(root: Path) -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    (root / "train.py").write_text("print('train')\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "sub").mkdir()
    (root / "sub" / "bundle.toml").write_text("[project]\nname = 'x'\n")
    os.symlink("train.py", root / "link.py")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "one")
    return root


def test_commit_and_tree_are_recorded(tmp_path: Path) -> None:
    root = repo(tmp_path / "r")
    record, archive, patch = describe_source(root, allow_dirty=False)
    assert record.commit == git(root, "rev-parse", "HEAD").strip()
    assert record.tree == git(root, "rev-parse", "HEAD^{tree}").strip()
    assert not record.dirty and patch is None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert sorted(tar.getnames()) == ["link.py", "run.sh", "sub/bundle.toml", "train.py"]


def test_a_project_in_a_subdirectory_records_its_tree_and_only_its_files(tmp_path: Path) -> None:
    root = repo(tmp_path / "r")
    record, archive, _ = describe_source(root / "sub", allow_dirty=False)
    assert record.path == "sub" and record.tree == git(root, "rev-parse", "HEAD:sub").strip()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert tar.getnames() == ["bundle.toml"]


@pytest.mark.parametrize(
    ("url", "bare"),
    [
        ("https://alice:s3cret@git.example.com/team/repo.git", "https://git.example.com/team/repo.git"),
        ("https://x-access-token:ghp_abc@github.com:8443/o/r.git?token=t#main", "https://github.com:8443/o/r.git#main"),
        ("ssh://git@git.example.com/team/repo.git", "ssh://git.example.com/team/repo.git"),
        ("git@github.com:team/repo.git", "git@github.com:team/repo.git"),
    ],
)
def test_credentials_are_stripped_from_the_origin_url(url: str, bare: str) -> None:
    assert strip_credentials(url) == bare


def test_the_recorded_origin_carries_no_credentials(tmp_path: Path) -> None:
    root = repo(tmp_path / "r")
    git(root, "remote", "add", "origin", "https://alice:tok3n-value@git.example.com/team/repo.git")
    record, _, _ = describe_source(root, allow_dirty=False)
    assert record.repo == "https://git.example.com/team/repo.git"
    assert "tok3n" not in str(record.as_dict())


def test_a_dirty_tree_is_refused_listing_the_dirty_files(tmp_path: Path) -> None:
    root = repo(tmp_path / "r")
    (root / "train.py").write_text("print('changed')\n")
    (root / "new.py").write_text("x = 1\n")
    with pytest.raises(SourceError, match="uncommitted changes") as caught:
        describe_source(root, allow_dirty=False)
    assert "train.py" in str(caught.value) and "new.py" in str(caught.value)
    assert "--allow-dirty" in caught.value.hint


def test_allow_dirty_records_a_patch_that_rebuilds_the_working_tree(tmp_path: Path) -> None:
    root = repo(tmp_path / "r")
    (root / "train.py").write_text("print('changed')\n")
    (root / "new.py").write_text("x = 1\n")
    before_index = git(root, "diff", "--cached", "--name-only")
    record, archive, patch = describe_source(root, allow_dirty=True)
    assert record.dirty and record.dirty_files == ("new.py", "train.py")
    assert patch is not None and b"new.py" in patch
    assert git(root, "diff", "--cached", "--name-only") == before_index  # the user's index is untouched
    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(rebuilt, filter="tar")
    git(rebuilt, "init", "-q")
    subprocess.run(["git", "-C", str(rebuilt), "apply", "-"], input=patch, check=True)
    assert (rebuilt / "train.py").read_text() == "print('changed')\n"
    assert (rebuilt / "new.py").read_text() == "x = 1\n"


def test_a_submodule_not_at_its_recorded_commit_is_refused(tmp_path: Path) -> None:
    lib = repo(tmp_path / "lib")
    root = repo(tmp_path / "r")
    git(root, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib")
    git(root, "commit", "-q", "-m", "add lib")
    record, archive, _ = describe_source(root, allow_dirty=False)  # pinned: fine, and not archived
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert not any(name.startswith("vendor/lib") for name in tar.getnames())
    checkout = root / "vendor" / "lib"
    (checkout / "extra.py").write_text("y = 2\n")
    git(checkout, "add", "-A")
    git(checkout, "commit", "-q", "-m", "moved on")
    with pytest.raises(SourceError, match="vendor/lib"):
        describe_source(root, allow_dirty=True)


def test_the_archive_is_identical_across_two_clones(tmp_path: Path) -> None:
    origin = repo(tmp_path / "origin")
    commit = git(origin, "rev-parse", "HEAD").strip()
    clones = []
    for name, umask in (("one", 0o022), ("two", 0o077)):
        old = os.umask(umask)
        try:
            subprocess.run(["git", "clone", "-q", str(origin), str(tmp_path / name)], check=True)
        finally:
            os.umask(old)
        for path in (tmp_path / name).rglob("*"):
            if not path.is_symlink():
                os.utime(path, (1_000_000 * len(name), 1_000_000 * len(name)))
        clones.append(tmp_path / name)
    archives = [archive_commit(clone, commit, "") for clone in clones]
    assert archives[0] == archives[1] == archive_commit(origin, commit, "")
    with tarfile.open(fileobj=io.BytesIO(archives[0])) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["run.sh"].mode == 0o755 and members["train.py"].mode == 0o644
    assert members["link.py"].issym() and members["link.py"].linkname == "train.py"
    assert {(m.mtime, m.uid, m.gid, m.uname) for m in members.values()} == {(0, 0, 0, "")}


def test_a_directory_outside_git_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(SourceError, match="not inside a git repository"):
        describe_source(tmp_path / "plain", allow_dirty=False)
