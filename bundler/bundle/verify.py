"""Verify a bundle: re-hash every file and judge the bag, the recipe's vendored files and the statements."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.bundle.attest import PROVENANCE, Reader, directory_reader, hash_bundle, statement_findings
from bundler.bundle.bag import (
    MANIFEST,
    PAYLOAD,
    RECIPE,
    TAGMANIFEST,
    VENDOR,
    open_bundle,
    parse_bag_info,
    parse_manifest,
    recipe_id,
)
from bundler.bundle.hashing import list_files
from bundler.errors import InputError, VerifyFailed


@dataclass
class VerifyReport:
    """What `verify` found; `ok` when there are no findings."""

    bundle: Path
    bundle_id: str
    files_checked: int = 0
    bytes_checked: int = 0
    findings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, object]:
        return {
            "schema": "bundler.verify/1",
            "bundle": str(self.bundle),
            "bundle_id": self.bundle_id,
            "ok": self.ok,
            "files_checked": self.files_checked,
            "bytes_checked": self.bytes_checked,
            "findings": self.findings,
        }


def _compare(expected: Mapping[str, str], actual: Mapping[str, str], what: str) -> list[str]:
    findings = []
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    renamed: set[str] = set()
    for old in missing:
        for new in extra:
            if new not in renamed and actual[new] == expected[old]:
                findings.append(f"renamed {what} file: {old} -> {new}")
                renamed.update({old, new})
                break
    findings += [f"missing {what} file: {p}" for p in missing if p not in renamed]
    findings += [f"extra {what} file: {p}" for p in extra if p not in renamed]
    findings += [
        f"changed {what} file: {p} (expected sha256 {expected[p][:12]}, found {actual[p][:12]})"
        for p in sorted(set(expected) & set(actual))
        if expected[p] != actual[p]
    ]
    return findings


def verify_bundle(bundle: Path) -> VerifyReport:
    """Re-hash every file; report every missing, extra, renamed or changed file, payload and tags alike.

    An exported .tar is verified member by member as it streams, without extracting it (bundler.bundle.archive).
    """
    open_bundle(bundle)
    files = list_files(bundle)
    hashed = {p.relative_to(bundle).as_posix(): s for p, s in _hash_all(files).items()}
    sizes = {p.relative_to(bundle).as_posix(): p.stat().st_size for p in files}

    def read_text(rel: str) -> str | None:
        path = bundle / rel
        return path.read_text(encoding="utf-8") if path.is_file() and not path.is_symlink() else None

    return check_bag(bundle, hashed, sizes, read_text)


# Recipe files that name vendored files by hash; verify reads them (and the tag files) as text.
VENDOR_RECORDS = {"dataset": "dataset.json", "model": "model.json", "wheels": "requirements.lock"}


def check_bag(
    where: Path, hashed: Mapping[str, str], sizes: Mapping[str, int], read_text: Callable[[str], str | None]
) -> VerifyReport:
    """Judge a bag from its files' hashes and sizes (bag-relative paths) and a reader of its small text files.

    Shared by the directory and the streamed-tar verifiers, so both report exactly the same findings.
    """
    info = parse_bag_info(read_text("bag-info.txt") or "")
    report = VerifyReport(where, info.get("Bundle-Id", ""))
    report.files_checked = len(hashed)
    report.bytes_checked = sum(sizes.values())
    manifest_text, tag_text = read_text(MANIFEST), read_text(TAGMANIFEST)
    for name, text in ((MANIFEST, manifest_text), (TAGMANIFEST, tag_text)):
        if text is None:
            report.findings.append(f"missing tag file: {name}")
    if manifest_text is None or tag_text is None:
        return report
    expected = parse_manifest(manifest_text, MANIFEST)
    actual_payload = {p: s for p, s in hashed.items() if p.startswith(PAYLOAD + "/")}
    report.findings += _compare(expected, actual_payload, "payload")
    tag_expected = parse_manifest(tag_text, TAGMANIFEST)
    actual_tags = {p: s for p, s in hashed.items() if not p.startswith(PAYLOAD + "/") and p != TAGMANIFEST}
    report.findings += _compare(tag_expected, actual_tags, "tag")
    recomputed = recipe_id(expected)
    if report.bundle_id != recomputed:
        report.findings.append(
            f"Bundle-Id in bag-info.txt is {report.bundle_id[:12]}, the recipe manifest gives {recomputed[:12]}"
        )
    oxum = info.get("Payload-Oxum", "")
    want = f"{sum(sizes[p] for p in actual_payload)}.{len(actual_payload)}"
    if oxum != want:
        report.findings.append(f"Payload-Oxum is {oxum or 'missing'}, the payload has {want}")
    report.findings += _vendor_findings(actual_payload, read_text)
    from bundler.bundle.verify import provenance_findings  # statements and signatures (issue 10

    report.findings += provenance_findings(hashed, read_text)
    return report


def _vendor_findings(payload: Mapping[str, str], read_text: Callable[[str], str | None]) -> list[str]:
    """Check each file under data/vendor/ against the recipe hash that names it (the ID covers only the recipe)."""
    import json

    vendored = {p[len(VENDOR) + 1 :]: s for p, s in payload.items() if p.startswith(VENDOR + "/")}
    if not vendored:
        return []
    named: dict[str, dict[str, str] | None] = {}
    for kind, record in VENDOR_RECORDS.items():
        text = read_text(f"{RECIPE}/{record}")
        if text is None:
            named[kind] = None
        elif kind == "wheels":
            named[kind] = _wheel_hashes(text)
        else:
            try:
                files = json.loads(text).get("files", {})
            except (ValueError, AttributeError):
                files = None
            named[kind] = files if isinstance(files, dict) else None
    findings = []
    for rel, sha in sorted(vendored.items()):
        kind, _, name = rel.partition("/")
        path = f"{VENDOR}/{rel}"
        if kind not in VENDOR_RECORDS or not name:
            findings.append(f"vendored file {path} is not under dataset/, model/ or wheels/; no recipe hash names it")
            continue
        record = f"{RECIPE}/{VENDOR_RECORDS[kind]}"
        names = named[kind]
        if names is None:
            findings.append(f"vendored file {path} cannot be checked: {record} is missing or unreadable")
            continue
        key = _wheel_name(name) if kind == "wheels" else name
        want = names.get(key)
        if want is None:
            findings.append(f"vendored file {path} is not named by {record}")
        elif sha not in want.split():
            findings.append(f"vendored file {path} does not match {record} (found sha256 {sha[:12]})")
    for kind in ("dataset", "model"):
        names = named[kind]
        present = {rel.partition("/")[2] for rel in vendored if rel.partition("/")[0] == kind}
        if present and names:
            findings += [
                f"vendored file {VENDOR}/{kind}/{name} is missing (named by {RECIPE}/{VENDOR_RECORDS[kind]})"
                for name in sorted(set(names) - present)
            ]
    return findings


def _wheel_name(filename: str) -> str:
    """The canonical project name of a wheel file (`Foo_Bar-1.0-py3-none-any.whl` -> `foo-bar`)."""
    return re.sub(r"[-_.]+", "-", filename.split("-", 1)[0]).lower()


def _wheel_hashes(lock_text: str) -> dict[str, str] | None:
    """{project: "hash hash ..."} from the lock's pins, or None when the lock does not parse."""
    from bundler.bundle.lockfile import parse_lock_text

    try:
        pins = parse_lock_text(lock_text)
    except InputError:
        return None
    return {pin.name: " ".join(pin.hashes) for pin in pins}


def _hash_all(files: list[Path]) -> dict[Path, str]:
    from bundler.bundle.hashing import hash_files

    return hash_files(files)


def require_verified(bundle: Path) -> VerifyReport:
    """Verify and raise VerifyFailed with every finding when anything is off."""
    report = verify_bundle(bundle)
    if not report.ok:
        raise VerifyFailed(bundle, report.findings)
    return report


def provenance_findings(
    hashed: Mapping[str, str], read_text: Reader, trusted_keys: Sequence[Any] | None = None
) -> list[str]:
    """Every provenance problem: statements vs files, signatures vs the signer's key and the signed manifest.

    Works from what bundle.check_bag already has, so a directory and a streamed .tar are judged alike:
    `hashed` maps bag-relative paths to the sha256 of the files as they are now, `read_text` reads a
    small tag file. Each finding starts with the provenance/ file it concerns.
    """
    from bundler.bundle.attest import signature_findings

    if not any(p.startswith(PROVENANCE + "/") for p in hashed):
        return [f"{PROVENANCE}/: the bundle is not signed, and a trusted key was required"] if trusted_keys else []
    return statement_findings(hashed, read_text) + signature_findings(hashed, read_text, trusted_keys)


def bundle_findings(bundle: Path, trusted_keys: Sequence[Any] | None = None) -> list[str]:
    """provenance_findings for a bundle directory (hashes every file)."""
    return provenance_findings(hash_bundle(bundle), directory_reader(bundle), trusted_keys)
