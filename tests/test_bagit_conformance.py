"""verify is a BagIt 1.0 validator first: the Library of Congress conformance cases, transplanted into real bundles.

Each invalid case's defective file (tests/fixtures/bagit-conformance, see its README) goes into a real bundle
whose tag manifest is then rewritten, so the defect is the only thing wrong; verify must refuse the bundle,
as a directory and as a tar, with a finding that names the defect. Our own bags must pass the `bagit` library.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bundler.bundle import bag as fmt
from bundler.bundle.archive import verify_archive
from bundler.bundle.bagit import DirectorySource, judge_bag
from bundler.bundle.hashing import manifest_lines
from bundler.bundle.verify import verify_bundle
from bundler.errors import NotABundleError
from tests.conftest import run_cli
from tests.fixtures.bundles import add_fake_run, make_bundle

SUITE = Path(__file__).parent / "fixtures" / "bagit-conformance"


def case(path: str) -> bytes:
    return (SUITE / path).read_bytes()


def payload_digests(bundle: Path, alg: str) -> dict[str, str]:
    return {
        p.relative_to(bundle).as_posix(): hashlib.new(alg, p.read_bytes()).hexdigest()
        for p in fmt.list_files(bundle / "data")
    }


def reseal_tagmanifest(bundle: Path) -> None:
    """What a forger does: make tagmanifest-sha256.txt agree with the tag files as they now are."""
    tags = {
        p.relative_to(bundle).as_posix(): fmt.sha256_file(p)
        for p in fmt.list_files(bundle)
        if not p.relative_to(bundle).as_posix().startswith("data/") and p.name != fmt.TAGMANIFEST
    }
    (bundle / fmt.TAGMANIFEST).write_text(manifest_lines(tags))


def replace_bagit(path: str) -> Callable[[Path], None]:
    return lambda bundle: (bundle / "bagit.txt").write_bytes(case(path))


def hostile_lines(path: str) -> Callable[[Path], None]:
    """Our own md5 manifest (every line right) plus the case's lines that point outside the bag."""

    def apply(bundle: Path) -> None:
        ours = manifest_lines(payload_digests(bundle, "md5"))
        theirs = [
            line for line in case(path).decode().splitlines(keepends=True) if not line.split()[1].startswith("data/")
        ]
        (bundle / "manifest-md5.txt").write_text(ours + "".join(theirs))

    return apply


def listed_twice(path: str) -> Callable[[Path], None]:
    """The case lists one file twice (same digest, or one altered like the case's `deadbeef`): so do we."""

    def apply(bundle: Path) -> None:
        (first_digest, name), (second_digest, _) = (line.split() for line in case(path).decode().splitlines()[:2])
        manifest = bundle / fmt.MANIFEST
        lines = manifest.read_text().splitlines(keepends=True)
        digest, ours = lines[0].split()
        again = digest if first_digest == second_digest else second_digest[:8] + digest[8:]
        manifest.write_text(lines[0] + f"{again}  {ours}\n" + "".join(lines[1:]))

    return apply


def partial_manifest(path: str) -> Callable[[Path], None]:
    """A second-algorithm manifest that, like the case's, lists only one payload file."""

    def apply(bundle: Path) -> None:
        assert len(case(path).decode().splitlines()) == 1
        digests = payload_digests(bundle, "sha512")
        first = sorted(digests)[0]
        (bundle / "manifest-sha512.txt").write_text(manifest_lines({first: digests[first]}))

    return apply


def copy_fetch(path: str) -> Callable[[Path], None]:
    return lambda bundle: (bundle / "fetch.txt").write_bytes(case(path))


def corrupt_tag_file(bundle: Path) -> None:
    """The case: a tag file whose bytes no longer match its tag manifest line (here without resealing)."""
    assert "bag-info.txt" in case("v0.97/invalid/corrupt-tag-file/tagmanifest-md5.txt").decode()
    info = bundle / "bag-info.txt"
    info.write_text(info.read_text().replace("bundler/1", "bundler/1 "))


CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # case: (transplant, finding kind, words the finding must hold)
    "v1.0/invalid/bagit-with-invalid-whitespace": (
        replace_bagit("v1.0/invalid/bagit-with-invalid-whitespace/bagit.txt"),
        "bagit-declaration",
        "'BagIt-Version : 1.0'",
    ),
    "v1.0/invalid/same-filename-listed-twice-with-different-hashes": (
        listed_twice("v1.0/invalid/same-filename-listed-twice-with-different-hashes/manifest-sha256.txt"),
        "manifest-duplicate",
        "conflicting digest",
    ),
    "v1.0/invalid/same-filename-listed-twice-with-the-same-hash": (
        listed_twice("v1.0/invalid/same-filename-listed-twice-with-the-same-hash/manifest-sha256.txt"),
        "manifest-duplicate",
        "same digest",
    ),
    "v1.0/invalid/notAllManifestsListAllFiles": (
        partial_manifest("v1.0/invalid/notAllManifestsListAllFiles/manifest-sha512.txt"),
        "not-listed",
        "not listed in manifest-sha512.txt",
    ),
    "v0.97/invalid/bom-in-bagit.txt": (
        replace_bagit("v0.97/invalid/bom-in-bagit.txt/bagit.txt"),
        "tag-encoding",
        "byte-order mark",
    ),
    "v0.97/invalid/invalid-version-number": (
        replace_bagit("v0.97/invalid/invalid-version-number/bagit.txt"),
        "bagit-declaration",
        "'BagIt-Version: .97'",
    ),
    "v0.97/invalid/baginfo-missing-encoding": (
        replace_bagit("v0.97/invalid/baginfo-missing-encoding/bagit.txt"),
        "bagit-declaration",
        "Tag-File-Character-Encoding",
    ),
    "v0.97/invalid/out-of-scope-file-paths-using-dot-notation": (
        hostile_lines("v0.97/invalid/out-of-scope-file-paths-using-dot-notation/manifest-md5.txt"),
        "out-of-scope-path",
        "'../../../README.md'",
    ),
    "v0.97/invalid/out-of-scope-file-paths-using-dot-notation-for-fetch": (
        copy_fetch("v0.97/invalid/out-of-scope-file-paths-using-dot-notation-for-fetch/fetch.txt"),
        "fetch",
        "incomplete",
    ),
    "v0.97/linux-only/out-of-scope-file-paths-using-absolute-path": (
        hostile_lines("v0.97/linux-only/out-of-scope-file-paths-using-absolute-path/manifest-md5.txt"),
        "out-of-scope-path",
        "'/tmp/foo' is an absolute",
    ),
    "v0.97/linux-only/out-of-scope-file-paths-using-shortcut": (
        hostile_lines("v0.97/linux-only/out-of-scope-file-paths-using-shortcut/manifest-md5.txt"),
        "out-of-scope-path",
        "'~/foo'",
    ),
    "v0.97/linux-only/out-of-scope-file-paths-using-shortcut-username": (
        hostile_lines("v0.97/linux-only/out-of-scope-file-paths-using-shortcut-username/manifest-md5.txt"),
        "out-of-scope-path",
        "'~root/foo'",
    ),
    "v0.97/invalid/corrupt-tag-file": (corrupt_tag_file, "changed-file", "tagmanifest-sha256.txt says sha256"),
}


def pack(bundle: Path, tar_path: Path) -> None:
    """The bundle as `bundler export` lays it out (export itself refuses a bundle that fails verify)."""
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(bundle, arcname="bundle-0123456789abcdef")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("base")
    bundle = make_bundle(tmp / "bundle")
    add_fake_run(bundle, tmp / "run")
    assert verify_bundle(bundle).ok
    return bundle


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_invalid_conformance_case_is_refused_naming_its_defect(base: Path, tmp_path: Path, name: str) -> None:
    transplant, kind, words = CASES[name]
    bundle = tmp_path / "bundle"
    shutil.copytree(base, bundle)
    transplant(bundle)
    if name != "v0.97/invalid/corrupt-tag-file":
        reseal_tagmanifest(bundle)
    as_dir = verify_bundle(bundle)
    assert any(f.kind == kind and words in str(f) for f in as_dir.findings), as_dir.findings
    pack(bundle, tmp_path / "b.tar")
    as_tar = verify_archive(tmp_path / "b.tar")
    assert sorted(as_tar.findings) == sorted(as_dir.findings)  # one judge: the same verdict for both
    cli = run_cli("verify", str(bundle))
    assert cli.returncode == 1 and words in cli.stderr and "internal error" not in cli.stderr


def test_missing_bagit_txt_is_not_a_bundle_exit_2(base: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(base, bundle)
    (bundle / "bagit.txt").unlink()  # v0.97/invalid/missing-bagit.txt
    with pytest.raises(NotABundleError, match="bagit.txt is missing"):
        verify_bundle(bundle)
    assert run_cli("verify", str(bundle)).returncode == 2


def test_the_valid_basic_bag_passes_the_bagit_judge() -> None:
    judged = judge_bag(DirectorySource(SUITE / "v1.0" / "valid" / "basicBag"))
    assert judged.findings == []
    assert judged.payload_manifest == {}  # sha512 only: a BagIt bag, but not a bundler bag


def test_every_algorithm_manifest_present_is_checked(base: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(base, bundle)
    for alg in ("md5", "sha1", "sha512"):
        digests = payload_digests(bundle, alg)
        (bundle / f"manifest-{alg}.txt").write_text(manifest_lines(digests))
    reseal_tagmanifest(bundle)
    assert verify_bundle(bundle).ok
    wrong = {p: "0" * 32 for p in payload_digests(bundle, "md5")}
    (bundle / "manifest-md5.txt").write_text(manifest_lines(wrong))
    reseal_tagmanifest(bundle)
    found = verify_bundle(bundle).findings
    assert {f.path for f in found if f.kind == "changed-file"} == set(wrong)
    assert all("manifest-md5.txt says md5" in f.detail for f in found)


def test_a_manifest_of_an_unknown_algorithm_is_refused(base: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(base, bundle)
    (bundle / "manifest-sha3.txt").write_text("")
    reseal_tagmanifest(bundle)
    assert ("unsupported-algorithm", "manifest-sha3.txt") in {(f.kind, f.path) for f in verify_bundle(bundle).findings}


def test_signed_bundles_with_two_signatures_are_valid_for_the_bagit_library(base: Path, tmp_path: Path) -> None:
    bagit = pytest.importorskip("bagit")
    from bundler.bundle.signing import generate_key
    from bundler.publish.sign import sign_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(base, bundle)
    for name in ("a.pem", "b.pem"):
        generate_key(tmp_path / name)
        sign_bundle(bundle, tmp_path / name)
    bagit.Bag(str(bundle)).validate()
    assert verify_bundle(bundle).ok
