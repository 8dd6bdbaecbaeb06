"""`bundler build --vendor`: the locked wheels inside the bundle, checked by verify, preferred by the docker runner."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bundler.bundle.bag import seal_bundle
from bundler.bundle.lockfile import parse_lock
from bundler.runners.docker import bundle_wheelhouse
from tests.conftest import QUICKSTART, make_git_project, run_cli


@pytest.fixture(scope="module")
def vendored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vendor")
    project = make_git_project(QUICKSTART, root / "quickstart")
    done = run_cli("build", str(project), "--out", str(root / "bundle"), "--no-run", "--vendor")
    assert done.returncode == 0, done.stderr
    return root / "bundle"


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(bundle, target, copy_function=shutil.copyfile)  # never hard links into the fixture
    return target


def test_vendor_stores_one_wheel_per_pin_and_verifies(vendored: Path) -> None:
    pins = parse_lock(vendored / "data/recipe/requirements.lock")
    wheels = sorted((vendored / "data/vendor/wheels").iterdir())
    assert len(wheels) == len(pins)
    names = {w.name.split("-")[0].lower().replace("_", "-") for w in wheels}
    assert names == {p.name.replace("_", "-") for p in pins}
    done = run_cli("verify", str(vendored))
    assert done.returncode == 0, done.stderr
    assert all(w.stat().st_nlink == 1 for w in wheels)  # copies: editing the bundle never touches the cache


def test_a_swapped_wheel_fails_verify_even_with_resealed_manifests(vendored: Path, tmp_path: Path) -> None:
    bundle = copy_of(vendored, tmp_path)
    wheels = sorted((bundle / "data/vendor/wheels").glob("*.whl"))
    victim = wheels[0]
    victim.write_bytes(victim.read_bytes() + b"\0")
    seal_bundle(bundle)  # the manifests now agree with the swapped file; only the lock's hash can catch it
    done = run_cli("verify", str(bundle))
    assert done.returncode == 1
    assert f"data/vendor/wheels/{victim.name}: does not match data/recipe/requirements.lock" in done.stderr


def test_docker_runner_takes_the_vendored_wheels_without_any_index(
    vendored: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nothing"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    folder, source = bundle_wheelhouse(vendored)
    assert source == "vendored"
    assert folder == vendored / "data/vendor/wheels"
    assert not (tmp_path / "empty-cache" / "wheelhouses").exists()
