"""pylock.toml (PEP 751) beside requirements.lock: written by `bundler lock`, read by packaging and uv."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib

from bundler.bundle.lockfile import parse_lock
from bundler.recipe.config import EnvironmentConfig
from bundler.recipe.lock import write_lock
from bundler.recipe.pylock import is_current, pylock_findings, pylock_path

ENV = EnvironmentConfig(image="debian-python-3.11")
REQUIREMENTS = "alpha==1.0\ntorch==2.13.0\ntransformers\npeft\nsafetensors\nnumpy\n"


def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    (folder / "requirements.in").write_text(REQUIREMENTS)
    return folder


def installed_from(pylock: Path, tmp_path: Path) -> dict[str, str]:
    """Install the lock into a fresh venv with `uv pip sync` (which reads PEP 751) and list what it holds."""
    uv = shutil.which("uv")
    assert uv, "uv is not installed"
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--quiet", str(venv)], check=True)
    done = subprocess.run(
        [uv, "pip", "sync", "--python", str(venv / "bin" / "python"), "--offline", str(pylock)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    listed = subprocess.run(
        [uv, "pip", "freeze", "--python", str(venv / "bin" / "python")], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("==", 1) for line in listed.split())


@pytest.mark.parametrize("resolver", ["pip-tools", "uv"])
def test_pylock_has_the_locks_pins_and_hashes_and_installs(
    resolver: str, tmp_path: Path, local_index: Path
) -> None:
    env = ENV.model_copy(update={"resolver": resolver})
    result = write_lock(project(tmp_path), env)
    pylock = pylock_path(result.lock)
    assert pylock.name == "pylock.toml" and is_current(result.lock)
    pins = parse_lock(result.lock)
    assert pylock_findings(pylock.read_text(), pins) == []  # parsed by packaging.pylock, then compared
    data = tomllib.loads(pylock.read_text())
    assert data["created-by"] == ("uv" if resolver == "uv" else "bundler")
    assert {p["name"]: p["version"] for p in data["packages"]} == {p.name: p.version for p in pins}
    installed = installed_from(pylock, tmp_path)
    assert {name: installed.get(name) for name in ("alpha", "torch", "numpy")} == {
        "alpha": "1.0",
        "torch": "2.13.0+cu128",
        "numpy": "2.4.6",
    }


def test_an_index_served_over_http_is_converted_with_its_urls_and_no_credentials(
    tmp_path: Path, local_index: Path, simple_index_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = simple_index_server
    monkeypatch.delenv("PIP_NO_INDEX")
    monkeypatch.delenv("PIP_FIND_LINKS")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://bob:hunter2@{base.removeprefix('http://')}/simple")
    result = write_lock(project(tmp_path), ENV)
    assert "hunter2" not in pylock_path(result.lock).read_text()
    data = tomllib.loads(pylock_path(result.lock).read_text())
    urls = [w["url"] for p in data["packages"] for w in p.get("wheels", [])]
    assert urls and all(u.startswith(f"{base}/files/") for u in urls)
    assert pylock_findings(pylock_path(result.lock).read_text(), parse_lock(result.lock)) == []


def test_a_changed_hash_or_version_is_found(tmp_path: Path, local_index: Path) -> None:
    result = write_lock(project(tmp_path), ENV)
    text = pylock_path(result.lock).read_text()
    pins = parse_lock(result.lock)
    alpha = next(p for p in pins if p.name == "alpha")
    changed_hash = text.replace(alpha.hashes[0], "0" * 64)
    assert pylock_findings(changed_hash, pins) == ["alpha: hashes differ (1 files, the lock allows 1)"]
    # packaging.pylock itself refuses a version its wheel's filename contradicts.
    changed_version = pylock_findings(text.replace('version = "1.0"', 'version = "1.1"'), pins)
    assert len(changed_version) == 1 and "'1.1'" in changed_version[0]
    assert pylock_findings("lock-version = 1\n", pins)[0].startswith("not a valid PEP 751 lock")


def test_an_edited_lock_makes_the_pylock_stale(tmp_path: Path, local_index: Path) -> None:
    result = write_lock(project(tmp_path), ENV)
    assert is_current(result.lock)
    result.lock.write_text(result.lock.read_text() + "\n")
    assert not is_current(result.lock)


def test_a_build_puts_the_projects_pylock_into_the_recipe_under_the_id(quickstart: Path, tmp_path: Path) -> None:
    from bundler.bundle.bag import payload_hashes, recipe_id
    from tests.conftest import run_cli

    result = run_cli("build", str(quickstart), "--out", str(tmp_path / "out"), "--no-run")
    assert result.returncode == 0, result.stderr
    recipe = tmp_path / "out" / "data" / "recipe"
    assert (recipe / "pylock.toml").read_bytes() == (quickstart / "pylock.toml").read_bytes()
    hashes = payload_hashes(tmp_path / "out")
    assert "data/recipe/pylock.toml" in hashes
    without = {p: s for p, s in hashes.items() if p != "data/recipe/pylock.toml"}
    assert recipe_id(hashes) != recipe_id(without)  # the bundle ID covers it
    assert run_cli("verify", str(tmp_path / "out")).returncode == 0
