"""Verify a bundle: BagIt 1.0 first, then everything bundler can recompute, then the signatures.

The layers, each reporting typed findings (bundler.bundle.finding) from one pass over the bytes:
1. BagIt (bundler.bundle.bagit): bagit.txt, bag-info.txt, every manifest of every algorithm, fetch.txt.
2. The bundle: the Bundle-Id from the recipe files, every run ID from its run's files, every run's
   statement (subjects and run manifest recomputed), every vendored file against the recipe hash naming it.
3. Signatures (bundler.bundle.attest): every envelope; the newest (trusted) signature against every file.

A directory and a tar are both a BagSource, so they get the same verdict from the same code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.bundle.attest import check_signatures, statement_findings
from bundler.bundle.bag import (
    RECIPE,
    RUN_ANNOTATIONS,
    RUNS,
    SIGNATURES,
    SUPPORTED_FORMATS,
    VENDOR,
    recipe_id,
    run_id_for,
    run_outputs,
)
from bundler.bundle.bagit import TAG_FILE_LIMIT, BagSource, DirectorySource, bag_info_pairs, decode_text, judge_bag
from bundler.bundle.finding import Finding
from bundler.errors import InputError, NotABundleError, VerifyFailed

VERIFY_SCHEMA = "bundler.verify/2"
# Recipe files that name vendored files by hash.
VENDOR_RECORDS = {"dataset": "dataset.json", "model": "model.json", "wheels": "requirements.lock"}


@dataclass
class VerifyReport:
    """What `verify` found; `ok` when there are no findings (unsigned additions fail only with --strict)."""

    bundle: Path
    bundle_id: str
    files_checked: int = 0
    bytes_checked: int = 0
    findings: list[Finding] = field(default_factory=list)
    unsigned: list[str] = field(default_factory=list)
    signatures: list[dict[str, Any]] = field(default_factory=list)
    sha256: dict[str, str] = field(default_factory=dict, repr=False)  # of every file, for callers that sign

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, object]:
        return {
            "schema": VERIFY_SCHEMA,
            "bundle": str(self.bundle),
            "bundle_id": self.bundle_id,
            "ok": self.ok,
            "files_checked": self.files_checked,
            "bytes_checked": self.bytes_checked,
            "findings": [f.as_dict() for f in sorted(self.findings)],
            "unsigned_additions": list(self.unsigned),
            "signatures": self.signatures,
        }


def verify_bundle(bundle: Path, trusted_keys: Sequence[Any] | None = None, strict: bool = False) -> VerifyReport:
    """Verify a bundle directory: every layer, every file re-hashed."""
    if not bundle.exists():
        raise NotABundleError(bundle, "no such directory")
    if not bundle.is_dir():
        raise NotABundleError(bundle, "not a directory (use `bundler import` for an exported .tar)")
    return judge_source(DirectorySource(bundle), trusted_keys=trusted_keys, strict=strict)


def judge_source(source: BagSource, trusted_keys: Sequence[Any] | None = None, strict: bool = False) -> VerifyReport:
    """The one judge of a bag, however it is stored; NotABundleError (exit 2) when it is no bundler bag at all."""
    sizes = source.sizes()
    if "bag-info.txt" not in sizes:
        raise NotABundleError(source.where, "bag-info.txt is missing")
    judged = judge_bag(source, unlisted_tag_ok=lambda rel: rel.startswith(SIGNATURES + "/"))
    if "bag-info.txt" in judged.texts and judged.info.get("Bundle-Format") not in SUPPORTED_FORMATS:
        found = judged.info.get("Bundle-Format")
        raise NotABundleError(
            source.where, f"unknown Bundle-Format {found!r}; this bundler reads {', '.join(SUPPORTED_FORMATS)}"
        )
    read_text = _text_reader(source, judged.texts, sizes)
    report = VerifyReport(source.where, judged.info.get("Bundle-Id", ""))
    report.files_checked, report.bytes_checked = len(sizes), sum(sizes.values())
    report.findings += judged.findings
    hashed = report.sha256 = judged.sha256
    payload = {p: s for p, s in hashed.items() if p.startswith("data/")}
    # From the manifest's lines: a changed recipe file is the BagIt layer's finding, not a second one here.
    bundle_id = recipe_id(judged.payload_manifest or payload)
    if "bag-info.txt" in judged.texts and report.bundle_id != bundle_id:
        report.findings.append(
            Finding(
                "bundle-id",
                "bag-info.txt",
                f"Bundle-Id is {report.bundle_id[:12] or 'missing'}, the recipe files give {bundle_id[:12]}",
            )
        )
    if "bag-info.txt" in judged.texts and "Payload-Oxum" not in judged.info:
        report.findings.append(
            Finding("payload-oxum", "bag-info.txt", "has no Payload-Oxum; bundler bags always record it")
        )
    if "manifest-sha256.txt" not in sizes:
        report.findings.append(Finding("missing-file", "manifest-sha256.txt", "bundler bags identify files by sha256"))
    runs, layout = _runs(payload)
    report.findings += layout
    report.findings += _run_id_findings(payload, runs, bundle_id)
    report.findings += statement_findings(hashed, read_text, runs)
    report.findings += vendor_findings(payload, read_text)
    signatures = check_signatures(
        hashed, read_text, bundle_id, bag_info_pairs(judged.texts.get("bag-info.txt")), trusted_keys, strict
    )
    report.findings += signatures.findings
    report.unsigned, report.signatures = signatures.unsigned, signatures.summary
    return report


def _text_reader(source: BagSource, texts: Mapping[str, str], sizes: Mapping[str, int]) -> Callable[[str], str | None]:
    cache = dict(texts)

    def read_text(rel: str) -> str | None:
        if rel not in cache and rel in sizes and sizes[rel] <= TAG_FILE_LIMIT:
            text, _ = decode_text(rel, source.read(rel))
            if text is not None:
                cache[rel] = text
        return cache.get(rel)

    return read_text


def _runs(payload: Mapping[str, str]) -> tuple[list[str], list[Finding]]:
    """Run directory names under data/runs/, and every file that sits outside a run directory there."""
    names, findings = set(), []
    for path in payload:
        if not path.startswith(RUNS + "/"):
            continue
        rest = path[len(RUNS) + 1 :]
        if "/" not in rest:
            findings.append(Finding("run-layout", path, "lies directly in data/runs/, outside any run directory"))
        else:
            names.add(rest.split("/", 1)[0])
    return sorted(names), findings


def _run_id_findings(payload: Mapping[str, str], runs: Sequence[str], bundle_id: str) -> list[Finding]:
    findings = []
    for name in runs:
        recomputed = run_id_for(bundle_id, run_outputs(payload, name))
        if recomputed != name:
            findings.append(
                Finding(
                    "run-id",
                    f"{RUNS}/{name}/",
                    f"the directory name is not the run's ID: its files (less {', '.join(sorted(RUN_ANNOTATIONS))}) "
                    f"give {recomputed[:12]}; a run's files were added, removed or changed, or the run was copied",
                )
            )
    return findings


def vendor_findings(payload: Mapping[str, str], read_text: Callable[[str], str | None]) -> list[Finding]:
    """Check each file under data/vendor/ against the recipe hash that names it (the ID covers only the recipe)."""
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
            findings.append(
                Finding("vendor", path, "is not under dataset/, model/ or wheels/; no recipe hash names it")
            )
            continue
        record = f"{RECIPE}/{VENDOR_RECORDS[kind]}"
        names = named[kind]
        if names is None:
            findings.append(Finding("vendor", path, f"cannot be checked: {record} is missing or unreadable"))
            continue
        want = names.get(_wheel_name(name) if kind == "wheels" else name)
        if want is None:
            findings.append(Finding("vendor", path, f"is not named by {record}"))
        elif sha not in str(want).split():
            findings.append(Finding("vendor", path, f"does not match {record} (found sha256 {sha[:12]})"))
    for kind in ("dataset", "model"):
        names = named[kind]
        present = {rel.partition("/")[2] for rel in vendored if rel.partition("/")[0] == kind}
        if present and names:
            findings += [
                Finding("vendor", f"{VENDOR}/{kind}/{name}", f"is missing (named by {RECIPE}/{VENDOR_RECORDS[kind]})")
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


def require_verified(bundle: Path) -> VerifyReport:
    """Verify and raise VerifyFailed with every finding when anything is off."""
    report = verify_bundle(bundle)
    if not report.ok:
        raise VerifyFailed(bundle, sorted(report.findings))
    return report
