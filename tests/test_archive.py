"""Export is byte-reproducible; import refuses every unsafe archive before writing; verify reads tars as they stream."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bundler.bundle import bag as fmt
from bundler.bundle.archive import ImportLimits, export_bundle, import_bundle, verify_archive
from bundler.bundle.hashing import canonical_json, sha256_bytes
from bundler.bundle.verify import verify_bundle
from bundler.errors import InputError, UnsafeArchiveError, VerifyFailed
from tests.conftest import run_cli
from tests.fixtures.bundles import full_bundle, make_bundle


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return full_bundle(tmp_path / "bundle", tmp_path / "run")


@pytest.fixture
def runless(tmp_path: Path) -> Path:
    """A bundle with vendored files and no run: editing its recipe falsifies no run ID or statement."""
    bundle = make_bundle(tmp_path / "runless")
    data = b'{"id": "1"}\n'
    (bundle / "data" / "recipe" / "dataset.json").write_text(
        canonical_json({"schema": "bundler.dataset/1", "format": "jsonl", "files": {"d.jsonl": sha256_bytes(data)}})
    )
    (bundle / "data" / "vendor" / "dataset").mkdir(parents=True)
    (bundle / "data" / "vendor" / "dataset" / "d.jsonl").write_bytes(data)
    fmt.seal_bundle(bundle)
    return bundle


def test_export_is_byte_identical_for_the_same_bundle_anywhere_anytime(tmp_path: Path, bundle: Path) -> None:
    first = export_bundle(bundle, tmp_path / "one.tar")
    elsewhere = tmp_path / "some" / "other" / "place"
    shutil.copytree(bundle, elsewhere)
    for path in elsewhere.rglob("*"):  # another clock, another umask
        os.utime(path, (1_900_000_000, 1_900_000_000))
        path.chmod(0o700 if path.is_dir() else 0o600)
    second = export_bundle(elsewhere, tmp_path / "two.tar")
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    assert first.sha256 == second.sha256 == sha256_bytes((tmp_path / "one.tar").read_bytes())


def test_export_members_are_sorted_plain_and_anonymous(tmp_path: Path, bundle: Path) -> None:
    export_bundle(bundle, tmp_path / "b.tar")
    with tarfile.open(tmp_path / "b.tar") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    top = names[0]
    assert top.startswith("bundle-") and all(n == top or n.startswith(top + "/") for n in names)
    assert all(m.isreg() or m.isdir() for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert {m.mode for m in members if m.isreg()} == {0o644}


def test_export_refuses_a_tampered_bundle(tmp_path: Path, bundle: Path) -> None:
    (bundle / "data" / "recipe" / "config.toml").write_text("seed = 99\n")
    with pytest.raises(VerifyFailed):
        export_bundle(bundle, tmp_path / "b.tar")
    assert not (tmp_path / "b.tar").exists()


def test_import_round_trips_into_a_verified_valid_bag(tmp_path: Path, bundle: Path) -> None:
    bagit = pytest.importorskip("bagit")
    export_bundle(bundle, tmp_path / "b.tar")
    report = import_bundle(tmp_path / "b.tar", tmp_path / "imported")
    assert report.ok and report.bundle_id == fmt.bundle_id_of(bundle)
    for path in fmt.list_files(bundle):
        rel = path.relative_to(bundle)
        assert (tmp_path / "imported" / rel).read_bytes() == path.read_bytes()
    bagit.Bag(str(tmp_path / "imported")).validate()
    assert sorted(os.listdir(tmp_path)) == ["b.tar", "bundle", "imported", "run"]


# --- untrusted archives: each is refused before anything is written -----------------------------


def _rewrite(good: Path, bad: Path, extra: Callable[[tarfile.TarFile, str], None]) -> None:
    """Copy an exported tar member by member, then let `extra` add hostile members under the same top dir."""
    with tarfile.open(good) as src, tarfile.open(bad, "w", format=tarfile.PAX_FORMAT) as dst:
        top = src.getmembers()[0].name
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
        extra(dst, top)


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _special(kind: bytes, linkname: str = "") -> Callable[[tarfile.TarFile, str], None]:
    def add(tar: tarfile.TarFile, top: str) -> None:
        info = tarfile.TarInfo(f"{top}/data/planted")
        info.type = kind
        info.linkname = linkname
        tar.addfile(info)

    return add


HOSTILE: dict[str, tuple[Callable[[tarfile.TarFile, str], None], str]] = {
    "absolute path": (lambda tar, top: _file(tar, "/tmp/bundler-owned"), "absolute path"),
    "dot-dot": (lambda tar, top: _file(tar, f"{top}/../../escaped"), "'..'"),
    "symlink": (_special(tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
    "hardlink": (_special(tarfile.LNKTYPE, "/etc/passwd"), "hard link"),
    "char device": (_special(tarfile.CHRTYPE), "is a character device"),
    "fifo": (_special(tarfile.FIFOTYPE), "is a FIFO"),
    "duplicate": (lambda tar, top: _file(tar, f"{top}/bagit.txt", b"BagIt-Version: 0.9\n"), "appears twice"),
    "unicode twins": (
        lambda tar, top: (_file(tar, f"{top}/data/caf\u00e9"), _file(tar, f"{top}/data/cafe\u0301")),
        "Unicode normalization",
    ),
    "file under a file": (lambda tar, top: _file(tar, f"{top}/bagit.txt/inner"), "which is a file"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_import_refuses_unsafe_members_before_writing_anything(tmp_path: Path, bundle: Path, case: str) -> None:
    add, expected = HOSTILE[case]
    export_bundle(bundle, tmp_path / "good.tar")
    _rewrite(tmp_path / "good.tar", tmp_path / "bad.tar", add)
    target = tmp_path / "target"
    target.mkdir()
    before = sorted(p.as_posix() for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeArchiveError, match=expected):
        import_bundle(tmp_path / "bad.tar", target / "imported")
    assert sorted(p.as_posix() for p in tmp_path.rglob("*")) == before
    assert not Path("/tmp/bundler-owned").exists()


def test_import_refuses_oversized_and_too_many_members(tmp_path: Path, bundle: Path) -> None:
    export_bundle(bundle, tmp_path / "b.tar")
    with pytest.raises(UnsafeArchiveError, match="more than the limit of 10"):
        import_bundle(tmp_path / "b.tar", tmp_path / "x", ImportLimits(max_member_bytes=10))
    with pytest.raises(UnsafeArchiveError, match="members, more than the limit of 3"):
        import_bundle(tmp_path / "b.tar", tmp_path / "x", ImportLimits(max_members=3))
    with pytest.raises(UnsafeArchiveError, match="members total"):
        import_bundle(tmp_path / "b.tar", tmp_path / "x", ImportLimits(max_total_bytes=100))
    assert not (tmp_path / "x").exists()


def test_import_reports_every_problem_at_once(tmp_path: Path, bundle: Path) -> None:
    export_bundle(bundle, tmp_path / "good.tar")

    def many(tar: tarfile.TarFile, top: str) -> None:
        _special(tarfile.SYMTYPE, "/")(tar, top)
        _file(tar, "/abs")

    _rewrite(tmp_path / "good.tar", tmp_path / "bad.tar", many)
    with pytest.raises(UnsafeArchiveError) as caught:
        import_bundle(tmp_path / "bad.tar", tmp_path / "x")
    assert len(caught.value.problems) == 2


@pytest.mark.parametrize("keep", ["100", "700", "3000", "boundary", "boundary-1-member"])
def test_truncated_tar_is_exit_2_and_writes_nothing(tmp_path: Path, bundle: Path, keep: str) -> None:
    export_bundle(bundle, tmp_path / "b.tar")
    data = (tmp_path / "b.tar").read_bytes()
    if keep.startswith("boundary"):
        with tarfile.open(tmp_path / "b.tar") as tar:
            members = tar.getmembers()
        cut_after = members[-1] if keep == "boundary" else members[-2]
        end = cut_after.offset_data + -(-cut_after.size // 512) * 512
    else:
        end = int(keep)
    (tmp_path / "cut.tar").write_bytes(data[:end])
    result = run_cli("import", str(tmp_path / "cut.tar"), "--out", str(tmp_path / "imported"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "hint:" in result.stderr
    assert not (tmp_path / "imported").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    verify = run_cli("verify", str(tmp_path / "cut.tar"))
    assert verify.returncode == 2 and "Traceback" not in verify.stderr


def test_tar_cut_inside_a_member_is_an_input_error(tmp_path: Path, bundle: Path) -> None:
    export_bundle(bundle, tmp_path / "b.tar")
    data = (tmp_path / "b.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(InputError, match="truncated"):
        import_bundle(tmp_path / "cut.tar", tmp_path / "imported")
    result = run_cli("import", str(tmp_path / "cut.tar"), "--out", str(tmp_path / "imported"))
    assert result.returncode == 2 and "truncated" in result.stderr


def test_import_into_a_non_empty_directory_is_refused(tmp_path: Path, bundle: Path) -> None:
    export_bundle(bundle, tmp_path / "b.tar")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    result = run_cli("import", str(tmp_path / "b.tar"), "--out", str(tmp_path / "busy"))
    assert result.returncode == 2 and (tmp_path / "busy" / "keep.txt").read_text() == "mine"


# --- verify on a tar, and vendored files -------------------------------------------------------


def test_verify_streams_an_exported_tar_and_finds_a_flipped_byte(tmp_path: Path, bundle: Path) -> None:
    export_bundle(bundle, tmp_path / "b.tar")
    ok = run_cli("verify", str(tmp_path / "b.tar"), "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"]
    data = bytearray((tmp_path / "b.tar").read_bytes())
    at = data.index(b"seed = 1\n")
    data[at + 7] = ord("7")
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    report = verify_archive(tmp_path / "bad.tar")
    assert ("changed-file", "data/recipe/config.toml") in {(f.kind, f.path) for f in report.findings}
    cli = run_cli("verify", str(tmp_path / "bad.tar"))
    assert cli.returncode == 1 and "data/recipe/config.toml" in cli.stderr


def test_a_resealed_vendored_file_is_checked_against_the_recipe_hash(runless: Path) -> None:
    bundle = runless
    before = fmt.bundle_id_of(bundle)
    (bundle / "data" / "vendor" / "dataset" / "d.jsonl").write_text('{"id": "1", "text": "poisoned"}\n')
    fmt.seal_bundle(bundle)  # manifests now agree with the poisoned file; the bundle ID does not move
    assert fmt.bundle_id_of(bundle) == before
    found = [str(f) for f in verify_bundle(bundle).findings]
    assert found == [
        "data/vendor/dataset/d.jsonl: does not match data/recipe/dataset.json "
        f"(found sha256 {fmt.sha256_file(bundle / 'data/vendor/dataset/d.jsonl')[:12]})"
    ]


def test_vendored_files_no_recipe_names_are_findings(runless: Path) -> None:
    bundle = runless
    vendor = bundle / "data" / "vendor"
    (vendor / "dataset" / "planted.jsonl").write_text("{}\n")
    (vendor / "wheels").mkdir()
    (vendor / "wheels" / "numpy-2.0.0-cp311-none-any.whl").write_bytes(b"not the locked wheel")
    (vendor / "stray.bin").write_bytes(b"?")
    fmt.seal_bundle(bundle)
    found = [str(f) for f in verify_bundle(bundle).findings]
    assert "data/vendor/dataset/planted.jsonl: is not named by data/recipe/dataset.json" in found
    assert any(f.startswith("data/vendor/wheels/numpy-2.0.0-cp311-none-any.whl: ") for f in found)
    assert any(f.startswith("data/vendor/stray.bin: is not under") for f in found)


def test_a_locked_wheel_with_the_right_hash_passes(runless: Path) -> None:
    bundle = runless
    wheel = b"pretend wheel bytes"
    recipe = bundle / "data" / "recipe"
    (recipe / "requirements.lock").write_text(f"numpy==2.0.0 \\\n    --hash=sha256:{sha256_bytes(wheel)}\n")
    (bundle / "data" / "vendor" / "wheels").mkdir()
    (bundle / "data" / "vendor" / "wheels" / "numpy-2.0.0-cp311-none-any.whl").write_bytes(wheel)
    fmt.seal_bundle(bundle)
    assert verify_bundle(bundle).findings == []
