"""Attestations in a bundle: names and payload types of statements and signatures, and the checks that read them.

A run's provenance is an in-toto Statement v1 with an SLSA provenance v1 predicate, written to
provenance/<run-id>.intoto.json with the run's own manifest beside it. A signature is one directory,
provenance/signatures/<NNNN>-<key>/, added whole by `bundler sign` and never changed after:

    signer.json                the signer's public key and key ID (never the private key)
    bundle.dsse.json           DSSE envelope over the signed manifest: the sha256 of EVERY file of the bag at
                               signing time (tag files, cards, publish records included) and bag-info's labels
    <run-id>.intoto.dsse.json  DSSE envelope over each run's statement (for in-toto tools)

Adding a signature changes no other file (signature directories stay out of the tag manifest: they are
checked by their signatures), so re-signing never invalidates an earlier signature. The checks here work
from hashes and a reader of small files, so a directory and a tar are judged alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bundler.bundle.bag import PAYLOAD, RECIPE, RUNS, SIGNATURES, VENDOR
from bundler.bundle.finding import Finding
from bundler.bundle.hashing import sha256_bytes
from bundler.bundle.signing import PublicKey, public_key_from_record, verify_envelope

PROVENANCE = "provenance"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
MANIFEST_PAYLOAD_TYPE = "application/vnd.bundler.signed-manifest+json"
SIGNED_MANIFEST_SCHEMA = "bundler.signed-manifest/2"
SIGNER_SCHEMA = "bundler.signer/1"
CRATE = f"{PAYLOAD}/ro-crate-metadata.json"
SIGNER_FILE = "signer.json"
BUNDLE_ENVELOPE_FILE = "bundle.dsse.json"
# Written after a run's statement exists, by publishing (card, push record) or by `bundler sign` (model.sig,
# bundle/oms.py): never part of a run's statement (a signature directory covers them).
PUBLISH_REWRITTEN = frozenset({"README.md", "publish.json", "model.sig"})
# bag-info labels bundler rewrites whenever a run is added; Payload-Oxum is recomputed from the files by verify.
UNSIGNED_BAG_INFO = frozenset({"Payload-Oxum", "Bag-Software-Agent"})
_RUN_FILE = re.compile(rf"^{RUNS}/[^/]+/([^/]+)$")
_SIGNATURE_DIR = re.compile(r"^([0-9]{4})-([0-9a-f]{16})$")
_FIXITY = re.compile(r"^(tag)?manifest-[A-Za-z0-9]+\.txt$")

Reader = Callable[[str], "str | None"]


def statement_name(run_id: str) -> str:
    return f"{PROVENANCE}/{run_id}.intoto.json"


def run_manifest_name(run_id: str) -> str:
    return f"{PROVENANCE}/{run_id}.manifest-sha256.txt"


def envelope_file(run_id: str) -> str:
    """A run statement's envelope, inside a signature directory."""
    return f"{run_id}.intoto.dsse.json"


def signature_dir_name(sequence: int, keyid: str) -> str:
    return f"{sequence:04d}-{keyid.removeprefix('sha256:')[:16]}"


def is_publish_rewritten(path: str) -> bool:
    """True for a run's card and push record: rewritten by `bundler push`, so never part of a statement."""
    match = _RUN_FILE.match(path)
    return bool(match and match.group(1) in PUBLISH_REWRITTEN)


def run_manifest(payload: Mapping[str, str], run_id: str) -> dict[str, str]:
    """What one run's statement vouches for: recipe, vendored inputs and its own files, less the publishing files."""
    prefixes = (RECIPE + "/", VENDOR + "/", f"{RUNS}/{run_id}/")
    return {p: s for p, s in payload.items() if p.startswith(prefixes) and not is_publish_rewritten(p)}


def loads_object(text: str | None) -> dict[str, Any]:
    """Parse a JSON object; anything else (missing, not JSON, not an object) reads as {}."""
    try:
        loaded = json.loads(text or "")
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def signed_bag_info(pairs: Sequence[tuple[str, str]]) -> list[list[str]]:
    """bag-info's (label, value) lines in order; the labels bundler rewrites when a run is added keep their place
    and count but not their value (Payload-Oxum is recomputed from the files by the BagIt check)."""
    return [[k, "*" if k in UNSIGNED_BAG_INFO else v] for k, v in pairs]


def signed_manifest(
    files: Mapping[str, str], bag_info: Sequence[tuple[str, str]], bundle_id: str, keyid: str
) -> dict[str, Any]:
    """What bundle.dsse.json signs: every file but the signatures, bag-info's lines, the bundle ID, the key ID."""
    return {
        "schema": SIGNED_MANIFEST_SCHEMA,
        "bundle_id": bundle_id,
        "keyid": keyid,
        "bag_info": signed_bag_info(bag_info),
        "files": {p: s for p, s in sorted(files.items()) if not p.startswith(SIGNATURES + "/")},
    }


# --- statements ---


def statement_findings(hashed: Mapping[str, str], read_text: Reader, runs: Sequence[str]) -> list[Finding]:
    """Every run has a statement whose subjects and run manifest are exactly its files as they are now."""
    findings: list[Finding] = []
    statements = {
        p for p in hashed if p.startswith(PROVENANCE + "/") and p.count("/") == 1 and p.endswith(".intoto.json")
    }
    for run_id in runs:
        name = statement_name(run_id)
        if name not in hashed:
            findings.append(Finding("statement", name, f"run {run_id[:12]} has no provenance statement"))
            continue
        findings += _one_statement(name, run_id, hashed, read_text)
    for name in sorted(statements - {statement_name(r) for r in runs}):
        findings.append(Finding("statement", name, "names a run that is not in data/runs/"))
    return findings


def _one_statement(name: str, run_id: str, hashed: Mapping[str, str], read_text: Reader) -> list[Finding]:
    statement = loads_object(read_text(name))
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != SLSA_PROVENANCE:
        return [Finding("statement", name, "is not an in-toto Statement v1 with an SLSA provenance v1 predicate")]
    subjects = statement.get("subject")
    claimed: dict[str, str] = {}
    for subject in subjects if isinstance(subjects, list) else []:
        if isinstance(subject, dict) and isinstance(subject.get("digest"), dict):
            claimed[str(subject.get("name", ""))] = str(subject["digest"].get("sha256", ""))
    manifest = run_manifest_name(run_id)
    prefix = f"{RUNS}/{run_id}/adapter/"
    expected = {p: s for p, s in hashed.items() if p.startswith(prefix)}
    if manifest in hashed:
        expected[manifest] = hashed[manifest]
    else:
        return [Finding("statement", manifest, f"run {run_id[:12]}'s manifest is missing")]
    findings = []
    for path in sorted(set(claimed) | set(expected)):
        if path not in expected:
            findings.append(Finding("statement", path, f"is a subject of {name} but is not in the bag"))
        elif path not in claimed:
            findings.append(Finding("statement", path, f"is in the run's adapter but {name} does not name it"))
        elif claimed[path] != expected[path]:
            findings.append(
                Finding("statement", path, f"has sha256 {expected[path][:12]}, {name} says {claimed[path][:12]}")
            )
    from bundler.bundle.bagit import compare, parse_manifest_lines

    listed, problems = parse_manifest_lines(manifest, read_text(manifest) or "", "sha256", tag=False)
    recomputed = run_manifest({p: s for p, s in hashed.items() if p.startswith(PAYLOAD + "/")}, run_id)
    for problem in [*problems, *compare(manifest, "sha256", listed, recomputed)]:
        findings.append(Finding("statement", problem.path, f"{problem.detail} (run {run_id[:12]})"))
    return findings


# --- signatures ---


@dataclass
class SignatureCheck:
    """What verify found about the signatures: findings, files added since the governing one, a summary."""

    findings: list[Finding] = field(default_factory=list)
    unsigned: list[str] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Signature:
    name: str
    key: PublicKey | None = None
    files: dict[str, str] = field(default_factory=dict)
    bag_info: list[list[str]] = field(default_factory=list)
    problems: list[Finding] = field(default_factory=list)


def signature_dirs(paths: Sequence[str] | Mapping[str, str]) -> list[str]:
    """The signature directory names present, oldest first."""
    return sorted({p.split("/")[2] for p in paths if p.startswith(SIGNATURES + "/") and p.count("/") >= 3})


def check_signatures(
    hashed: Mapping[str, str],
    read_text: Reader,
    bundle_id: str,
    bag_info: Sequence[tuple[str, str]],
    trusted_keys: Sequence[PublicKey] | None = None,
    strict: bool = False,
) -> SignatureCheck:
    """Check every signature's envelopes; compare the newest valid (trusted) one with the files as they are now.

    The newest signature governs: files it covers must be unchanged; files it does not cover are unsigned
    additions (a finding only when `strict`). Earlier signatures are checked as envelopes only, so signing
    again after a push or a replay never turns an earlier signature into a failure.
    """
    check = SignatureCheck()
    stray = [p for p in hashed if p.startswith(SIGNATURES + "/") and p.count("/") < 3]
    check.findings += [Finding("signature", p, "is not inside a signature directory") for p in sorted(stray)]
    signatures = [_read_signature(name, hashed, read_text) for name in signature_dirs(hashed)]
    trusted_ids = {k.keyid for k in trusted_keys or []}
    for sig in signatures:
        check.findings += sig.problems
        keyid = sig.key.keyid if sig.key else None
        check.summary.append(
            {
                "name": f"{SIGNATURES}/{sig.name}",
                "keyid": keyid,
                "valid": not sig.problems,
                "trusted": keyid in trusted_ids,
            }
        )
    valid = [s for s in signatures if not s.problems and s.key]
    candidates = [s for s in valid if s.key and s.key.keyid in trusted_ids] if trusted_keys else valid
    if not candidates:
        if trusted_keys and valid:
            by = ", ".join(sorted({s.key.keyid for s in valid if s.key}))
            wanted = ", ".join(sorted(trusted_ids))
            check.findings.append(Finding("untrusted", SIGNATURES, f"signed by {by}, not by a trusted key ({wanted})"))
        elif trusted_keys and not signatures:
            check.findings.append(
                Finding("not-signed", PROVENANCE, "the bundle is not signed, and a trusted key was required")
            )
        return check
    governing = candidates[-1]
    for entry in check.summary:
        entry["governing"] = entry["name"] == f"{SIGNATURES}/{governing.name}"
    check.findings += _compare_signed(governing, hashed, bag_info, check)
    if strict:
        check.findings += [
            Finding("unsigned-addition", p, f"added after {SIGNATURES}/{governing.name} was made; --strict refuses it")
            for p in check.unsigned
        ]
    return check


def _read_signature(name: str, hashed: Mapping[str, str], read_text: Reader) -> _Signature:
    sig = _Signature(name)
    base = f"{SIGNATURES}/{name}"
    if not _SIGNATURE_DIR.match(name):
        sig.problems.append(Finding("signature", base, "is not named <NNNN>-<key ID prefix>"))
        return sig
    signer = loads_object(read_text(f"{base}/{SIGNER_FILE}"))
    try:
        sig.key = public_key_from_record(signer)
    except ValueError as exc:
        sig.problems.append(Finding("signature", f"{base}/{SIGNER_FILE}", f"holds no usable public key ({exc})"))
        return sig
    if signer.get("keyid") != sig.key.keyid:
        sig.problems.append(
            Finding(
                "signature",
                f"{base}/{SIGNER_FILE}",
                f"records key ID {signer.get('keyid')}, its key is {sig.key.keyid}",
            )
        )
    envelope = f"{base}/{BUNDLE_ENVELOPE_FILE}"
    result = verify_envelope(loads_object(read_text(envelope)), sig.key)
    if result.problem:
        sig.problems.append(Finding("signature", envelope, result.problem))
        return sig
    signed = loads_object(result.payload.decode("utf-8", errors="replace"))
    files, info = signed.get("files"), signed.get("bag_info")
    if (
        result.payload_type != MANIFEST_PAYLOAD_TYPE
        or signed.get("schema") != SIGNED_MANIFEST_SCHEMA
        or not isinstance(files, dict)
        or not isinstance(info, list)
    ):
        sig.problems.append(Finding("signature", envelope, f"does not sign a {SIGNED_MANIFEST_SCHEMA} manifest"))
        return sig
    sig.files = {str(k): str(v) for k, v in files.items()}
    sig.bag_info = [[str(x) for x in pair] for pair in info if isinstance(pair, list)]
    if signed.get("keyid") != sig.key.keyid:
        sig.problems.append(
            Finding("signature", envelope, f"names key {signed.get('keyid')}, signed by {sig.key.keyid}")
        )
    # A different bundle_id means the recipe changed: the file comparison names which file, so it is no problem here.
    expected = {SIGNER_FILE, BUNDLE_ENVELOPE_FILE}
    for path in sorted(p for p in hashed if p.startswith(base + "/")):
        leaf = path[len(base) + 1 :]
        if leaf in expected:
            continue
        if "/" in leaf or not leaf.endswith(".intoto.dsse.json"):
            sig.problems.append(Finding("signature", path, "is not a file bundler puts in a signature directory"))
            continue
        statement = statement_name(leaf.removesuffix(".intoto.dsse.json"))
        run_check = verify_envelope(loads_object(read_text(path)), sig.key)
        if run_check.problem:
            sig.problems.append(Finding("signature", path, run_check.problem))
        elif run_check.payload_type != INTOTO_PAYLOAD_TYPE:
            sig.problems.append(
                Finding("signature", path, f"payload type {run_check.payload_type!r} is not {INTOTO_PAYLOAD_TYPE}")
            )
        elif sig.files.get(statement) != sha256_bytes(run_check.payload):
            sig.problems.append(
                Finding("signature", path, f"signs other bytes than the {statement} this signature covers")
            )
    return sig


def _compare_signed(
    sig: _Signature, hashed: Mapping[str, str], bag_info: Sequence[tuple[str, str]], check: SignatureCheck
) -> list[Finding]:
    where = f"{SIGNATURES}/{sig.name}"
    now = {p: s for p, s in hashed.items() if not p.startswith(SIGNATURES + "/")}
    added = sorted(set(now) - set(sig.files))
    check.unsigned = [p for p in added]
    findings = []
    for path in sorted(set(sig.files) - set(now)):
        findings.append(Finding("signed-missing", path, f"was signed by {where} and is gone"))
    runs_added = any(p.startswith(RUNS + "/") for p in added)
    for path in sorted(set(sig.files) & set(now)):
        if sig.files[path] == now[path] or _FIXITY.match(path):
            continue  # manifests restate the files' digests; each file is compared by its own bytes here
        if path == "bag-info.txt":
            findings += _bag_info_findings(sig.bag_info, bag_info, where)
        elif path == CRATE and runs_added:
            check.unsigned.append(path)  # the crate describes every run: rewritten when one is added after signing
        else:
            findings.append(
                Finding(
                    "signed-changed",
                    path,
                    f"changed after {where} signed it (sha256 {sig.files[path][:12]} -> {now[path][:12]})",
                )
            )
    check.unsigned.sort()
    return findings


def _bag_info_findings(signed: list[list[str]], now: Sequence[tuple[str, str]], where: str) -> list[Finding]:
    current = signed_bag_info(now)
    if current == signed:
        return []
    before, after = {tuple(p) for p in signed}, {tuple(p) for p in current}
    changes = [f"{k}: {v!r} removed" for k, v in sorted(before - after)] + [
        f"{k}: {v!r} added" for k, v in sorted(after - before)
    ]
    detail = "; ".join(changes) or "its lines were reordered or repeated"
    return [Finding("signed-changed", "bag-info.txt", f"changed after {where} signed it ({detail})")]
