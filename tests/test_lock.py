"""bundler.recipe.lock against real resolvers (pip-tools, uv) and real tiny wheels on this machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bundler.bundle.hashing import sha256_file
from bundler.bundle.lockfile import lock_header_input_sha, lock_sha256, parse_lock
from bundler.errors import (
    EXIT_CHECK_FAILED,
    EXIT_INPUT,
    InputError,
    SecretError,
    StaleLockError,
    UnresolvableRequirementsError,
)
from bundler.recipe.config import EnvironmentConfig
from bundler.recipe.lock import check_lock, effective_input, strip_credentials, write_lock

ENV = EnvironmentConfig(image="debian-python-3.11")
ALL_RUNTIME = "torch==2.13.0\ntransformers\npeft\nsafetensors\nnumpy\n"


def project(tmp_path: Path, requirements: str) -> Path:
    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    (folder / "requirements.in").write_text(requirements)
    return folder


def test_local_version_label_is_kept_and_its_source_recorded(tmp_path: Path, local_index: Path) -> None:
    result = write_lock(project(tmp_path, ALL_RUNTIME), ENV)
    pins = {p.name: p for p in parse_lock(result.lock)}
    assert pins["torch"].version == "2.13.0+cu128"
    assert pins["torch"].hashes == (sha256_file(local_index / "torch-2.13.0+cu128-py3-none-any.whl"),)
    assert f"# variant: torch==2.13.0+cu128 from {local_index}" in result.lock.read_text()


def test_header_records_input_sha_resolver_and_target(tmp_path: Path, local_index: Path) -> None:
    folder = project(tmp_path, ALL_RUNTIME)
    result = write_lock(folder, ENV)
    header = result.lock.read_text().split("\nalpha", 1)[0]
    assert lock_header_input_sha(result.lock) == result.input_sha256
    assert "# resolver: pip-tools " in header
    assert "# target: python 3.11, linux/x86_64 (image debian-python-3.11)" in header
    assert f"# find-links: {local_index}" in header
    assert lock_sha256(result.lock) == result.lock_sha256


def test_runtime_requirements_are_added_when_left_out(tmp_path: Path, local_index: Path) -> None:
    folder = project(tmp_path, "alpha\ntorch==2.13.0\n")
    text, added = effective_input(folder / "requirements.in")
    assert {a.split(">")[0].split("=")[0] for a in added} == {
        "transformers",
        "peft",
        "safetensors",
        "numpy",
    }
    assert text.startswith("alpha\ntorch==2.13.0\n")
    result = write_lock(folder, ENV)
    assert {p.name for p in parse_lock(result.lock)} >= {
        "alpha",
        "torch",
        "transformers",
        "peft",
        "safetensors",
        "numpy",
    }
    assert (folder / "requirements.in").read_text() == "alpha\ntorch==2.13.0\n"


def test_second_lock_with_nothing_changed_comes_from_the_cache(tmp_path: Path, local_index: Path) -> None:
    folder = project(tmp_path, ALL_RUNTIME)
    first = write_lock(folder, ENV)
    before = first.lock.read_bytes()
    second = write_lock(folder, ENV)
    assert (first.cached, second.cached) == (False, True)
    assert second.lock.read_bytes() == before


def test_check_passes_for_a_fresh_lock_and_fails_after_an_edit(tmp_path: Path, local_index: Path) -> None:
    folder = project(tmp_path, ALL_RUNTIME)
    write_lock(folder, ENV)
    assert check_lock(folder, ENV).input_sha256 == lock_header_input_sha(folder / "requirements.lock")
    (folder / "requirements.in").write_text(ALL_RUNTIME + "alpha\n")
    with pytest.raises(StaleLockError) as caught:
        check_lock(folder, ENV)
    assert caught.value.exit_code == EXIT_CHECK_FAILED
    assert "bundler lock" in caught.value.hint


def test_missing_lock_is_bad_input_pointing_at_bundler_lock(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        check_lock(project(tmp_path, ALL_RUNTIME), ENV)
    assert caught.value.exit_code == EXIT_INPUT
    assert "`bundler lock`" in caught.value.hint


def test_unresolvable_package_is_bad_input(tmp_path: Path, local_index: Path) -> None:
    folder = project(tmp_path, ALL_RUNTIME + "no-such-package-anywhere==9.9\n")
    with pytest.raises(UnresolvableRequirementsError) as caught:
        write_lock(folder, ENV)
    assert caught.value.exit_code == EXIT_INPUT
    assert "no-such-package-anywhere" in str(caught.value)
    assert not (folder / "requirements.lock").exists()


def test_requirement_url_with_credentials_is_refused_and_never_written(tmp_path: Path, local_index: Path) -> None:
    secret = "s3cr3t-t0ken"
    folder = project(tmp_path, ALL_RUNTIME + f"alpha @ https://user:{secret}@127.0.0.1:9/alpha.whl\n")
    with pytest.raises(SecretError) as caught:
        write_lock(folder, ENV)
    assert caught.value.exit_code == EXIT_INPUT
    assert secret not in str(caught.value)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "requirements.in"]
    assert all(secret.encode() not in p.read_bytes() for p in written)
    assert not (folder / "requirements.lock").exists()


def test_index_credentials_are_stripped_from_the_header(
    tmp_path: Path,
    local_index: Path,
    simple_index_server: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, _ = simple_index_server
    host = base.removeprefix("http://")
    monkeypatch.setenv("PIP_NO_INDEX", "0")
    monkeypatch.delenv("PIP_FIND_LINKS")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://bob:hunter2@{host}/simple")
    result = write_lock(project(tmp_path, ALL_RUNTIME), ENV)
    text = result.lock.read_text()
    assert f"# index-url: http://{host}/simple" in text
    assert "hunter2" not in text
    assert all(b"hunter2" not in p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert "torch" in {p.name for p in parse_lock(result.lock)}


def test_uv_resolves_for_the_target_and_agrees_with_pip_tools(tmp_path: Path, local_index: Path) -> None:
    folder = project(tmp_path, ALL_RUNTIME)
    pip_tools = {(p.name, p.version, p.hashes) for p in parse_lock(write_lock(folder, ENV).lock)}
    uv_env = ENV.model_copy(update={"resolver": "uv", "lock": "uv.lock.txt"})
    result = write_lock(folder, uv_env)
    assert "# resolver: uv " in result.lock.read_text()
    pins = {(p.name, p.version, p.hashes) for p in parse_lock(result.lock)}
    assert pins == pip_tools


def test_strip_credentials_keeps_everything_but_the_userinfo() -> None:
    assert strip_credentials("https://u:p@example.org:8443/simple?x=1") == "https://example.org:8443/simple?x=1"
    assert strip_credentials("/opt/wheels") == "/opt/wheels"


def test_parse_lock_reads_markers_and_every_hash(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        '# header\nFoo_Bar==1.0+cpu ; python_version >= "3.8" \\\n'
        f"    --hash=sha256:{'b' * 64} \\\n    --hash=sha256:{'a' * 64}\n    # via -r requirements.in\n"
    )
    [pin] = parse_lock(lock)
    assert (pin.name, pin.version, pin.marker) == ("foo-bar", "1.0+cpu", 'python_version >= "3.8"')
    assert pin.hashes == ("a" * 64, "b" * 64)


@pytest.mark.skipif(os.environ.get("BUNDLER_NETWORK_TESTS") != "1", reason="resolves against PyPI")
def test_quickstart_requirements_lock_against_the_real_indexes(tmp_path: Path) -> None:
    result = write_lock(project(tmp_path, ALL_RUNTIME), ENV)
    assert any(p.name == "torch" and "+" in p.version for p in parse_lock(result.lock))
