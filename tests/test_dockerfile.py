"""Dockerfile rendering and the wheelhouse that feeds it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundler.errors import WheelHashMismatchError
from bundler.recipe.config import EnvironmentConfig
from bundler.recipe.dockerfile import render_dockerfile
from bundler.recipe.lock import write_lock
from bundler.recipe.wheelhouse import download_wheelhouse, verify_wheelhouse

REPO = Path(__file__).resolve().parent.parent
IMAGE_LOCK = {
    "reference": "127.0.0.1:5000/bundler/debian-python:3.11",
    "digest": "sha256:" + "c" * 64,
    "python_bin": "python3",
}
LOCK_SHA = "d" * 64


def test_rendering_is_byte_identical_across_processes_and_hash_seeds() -> None:
    """Two fresh interpreters with different hash seeds (set and dict order) render the same bytes as this one."""
    code = (
        "import sys, json; from bundler.recipe.dockerfile import render_dockerfile; "
        "sys.stdout.write(render_dockerfile(json.loads(sys.argv[1]), sys.argv[2]))"
    )
    here = render_dockerfile(dict(reversed(list(IMAGE_LOCK.items()))), LOCK_SHA)
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", code, json.dumps(IMAGE_LOCK), LOCK_SHA],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)},
        )
        assert done.stdout == here
    assert here != render_dockerfile(IMAGE_LOCK, "e" * 64)


def test_every_stage_starts_from_the_pinned_digest_with_no_buildkit_syntax() -> None:
    text = render_dockerfile(IMAGE_LOCK, LOCK_SHA)
    froms = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert froms == [f"{IMAGE_LOCK['reference']}@{IMAGE_LOCK['digest']}"] * 2
    assert "# syntax=" not in text and "--mount" not in text and "<<" not in text


def test_install_is_offline_hash_checked_and_before_the_code() -> None:
    text = render_dockerfile(IMAGE_LOCK, LOCK_SHA)
    assert "pip install --no-index --require-hashes --no-deps" in text
    assert text.index("pip install") < text.index("COPY recipe/")
    assert "PYTHONHASHSEED=0" in text and "CUBLAS_WORKSPACE_CONFIG=:4096:8" in text
    user = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert user and not user[-1].startswith(("0", "root"))
    assert f'org.bundler.lock-sha256="{LOCK_SHA}"' in text


def test_bundle_id_cannot_be_rendered_into_the_file_it_hashes() -> None:
    with pytest.raises(TypeError):
        render_dockerfile(IMAGE_LOCK, LOCK_SHA, "f" * 64)


@pytest.fixture
def locked(tmp_path: Path, local_index: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "requirements.in").write_text("torch==2.13.0\ntransformers\npeft\nsafetensors\nnumpy\n")
    return write_lock(project, EnvironmentConfig(image="debian-python-3.11")).lock


def test_wheelhouse_holds_one_verified_wheel_per_pin(tmp_path: Path, locked: Path) -> None:
    house = download_wheelhouse(locked, tmp_path / "house")
    assert sorted(verify_wheelhouse(locked, house)) == sorted(p.name for p in house.iterdir())
    assert len(list(house.iterdir())) == 5


def test_a_wheel_whose_hash_the_lock_does_not_name_is_refused(tmp_path: Path, locked: Path) -> None:
    house = download_wheelhouse(locked, tmp_path / "house")
    wheel = next(house.glob("numpy-*.whl"))
    data = wheel.read_bytes()
    wheel.unlink()  # the house holds hard links into the cache; never write through them
    wheel.write_bytes(data + b"\0")
    with pytest.raises(WheelHashMismatchError) as caught:
        verify_wheelhouse(locked, house)
    assert caught.value.exit_code == 2


def test_a_download_that_does_not_match_the_lock_is_refused(tmp_path: Path, locked: Path, local_index: Path) -> None:
    shutil.copy(local_index / "alpha-1.0-py3-none-any.whl", local_index / "numpy-2.4.6-py3-none-any.whl")
    with pytest.raises(WheelHashMismatchError):
        download_wheelhouse(locked, tmp_path / "house")
    assert not (tmp_path / "house").exists()
