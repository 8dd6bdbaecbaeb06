"""Attestations in a bundle: the names and payload types of statements and signatures, and the checks that read them.

A run's provenance is an in-toto Statement v1 with an SLSA provenance v1 predicate, written to
provenance/<run-id>.intoto.json with the run's own manifest beside it; signatures are DSSE envelopes
(bundler.bundle.signing). The checks here work from hashes and a reader of small text files, so a
directory and a streamed .tar are judged alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bundler.bundle.bag import PAYLOAD, RECIPE, RUNS, VENDOR, bundle_id_of, payload_hashes
from bundler.bundle.hashing import hash_files, list_files, sha256_bytes, sha256_file
from bundler.bundle.signing import PublicKey, public_key_from_pem, verify_envelope

PROVENANCE = "provenance"


STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"


INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


MANIFEST_PAYLOAD_TYPE = "application/vnd.bundler.signed-manifest+json"


SIGNED_MANIFEST_SCHEMA = "bundler.signed-manifest/1"


SIGNER_SCHEMA = "bundler.signer/1"


CRATE = f"{PAYLOAD}/ro-crate-metadata.json"


# Written by publishing after a signature may exist: never part of what is signed.
PUBLISH_REWRITTEN = frozenset({"README.md", "publish.json"})


SIGNER = f"{PROVENANCE}/signer.json"


BUNDLE_ENVELOPE = f"{PROVENANCE}/bundle.dsse.json"


_RUN_FILE = re.compile(rf"^{RUNS}/[^/]+/([^/]+)$")


def statement_name(run_id: str) -> str:
    return f"{PROVENANCE}/{run_id}.intoto.json"


def envelope_name(run_id: str) -> str:
    return f"{PROVENANCE}/{run_id}.intoto.dsse.json"


def run_manifest_name(run_id: str) -> str:
    return f"{PROVENANCE}/{run_id}.manifest-sha256.txt"


def is_publish_rewritten(path: str) -> bool:
    """True for a run's card and push record: rewritten by `bundler push`, so never signed."""
    match = _RUN_FILE.match(path)
    return bool(match and match.group(1) in PUBLISH_REWRITTEN)


def signed_payload_view(payload: Mapping[str, str]) -> dict[str, str]:
    """The payload manifest as signed: every payload file except the run cards and push records."""
    return {p: s for p, s in payload.items() if p.startswith(PAYLOAD + "/") and not is_publish_rewritten(p)}


def run_manifest(payload: Mapping[str, str], run_id: str) -> dict[str, str]:
    """What one run vouches for: recipe, vendored inputs and its own files, less the publishing files."""
    prefixes = (RECIPE + "/", VENDOR + "/", f"{RUNS}/{run_id}/")
    return {p: s for p, s in signed_payload_view(payload).items() if p.startswith(prefixes)}


Reader = Callable[[str], "str | None"]


def statement_findings(hashed: Mapping[str, str], read_text: Reader) -> list[str]:
    """Each statement must be an SLSA v1 in-toto statement whose subjects match the files as they are."""
    findings: list[str] = []
    for name in sorted(p for p in hashed if p.startswith(PROVENANCE + "/") and p.endswith(".intoto.json")):
        statement = loads_object(read_text(name))
        if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != SLSA_PROVENANCE:
            findings.append(f"{name}: not an in-toto Statement v1 with an SLSA provenance v1 predicate")
            continue
        subjects = statement.get("subject") or []
        if not subjects:
            findings.append(f"{name}: names no subject")
        for subject in subjects:
            target = str(subject.get("name", ""))
            want = (subject.get("digest") or {}).get("sha256", "")
            found = hashed.get(target)
            if found is None:
                findings.append(f"{name}: subject {target} is missing")
            elif found != want:
                findings.append(f"{name}: subject {target} has sha256 {found[:12]}, the statement says {want[:12]}")
            elif target.endswith(".manifest-sha256.txt"):
                findings += _run_manifest_findings(target, read_text(target), hashed)
    return findings


def _run_manifest_findings(name: str, text: str | None, hashed: Mapping[str, str]) -> list[str]:
    from bundler.bundle.bag import parse_manifest
    from bundler.errors import InputError

    try:
        lines = parse_manifest(text or "", name)
    except InputError as exc:
        return [f"{name}: {exc}"]
    findings = []
    for rel, want in sorted(lines.items()):
        found = hashed.get(rel)
        if found is None:
            findings.append(f"{name}: {rel} is missing")
        elif found != want:
            findings.append(f"{name}: {rel} has sha256 {found[:12]}, the run's manifest says {want[:12]}")
    return findings


def hash_bundle(bundle: Path) -> dict[str, str]:
    """{bag-relative path: sha256} of every file of a bundle directory."""
    return {p.relative_to(bundle).as_posix(): s for p, s in hash_files(list_files(bundle)).items()}


def directory_reader(bundle: Path) -> Reader:
    def read_text(rel: str) -> str | None:
        path = bundle / rel
        return path.read_text(encoding="utf-8") if path.is_file() and not path.is_symlink() else None

    return read_text


def loads_object(text: str | None) -> dict[str, Any]:
    """Parse a JSON object; anything else (missing, not JSON, not an object) reads as {}."""
    try:
        loaded = json.loads(text or "")
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def signed_manifest(bundle: Path, keyid: str) -> dict[str, Any]:
    """What provenance/bundle.dsse.json signs: bundle ID, key ID, payload view, provenance file digests.

    The payload view comes from the payload manifest, which sign_bundle verified against the files.
    """
    provenance = {
        p.relative_to(bundle).as_posix(): sha256_file(p) for p in sorted((bundle / PROVENANCE).iterdir()) if p.is_file()
    }
    return {
        "schema": SIGNED_MANIFEST_SCHEMA,
        "bundle_id": bundle_id_of(bundle),
        "keyid": keyid,
        "payload": signed_payload_view(payload_hashes(bundle)),
        "provenance": _provenance_view(provenance),
    }


def signature_findings(
    hashed: Mapping[str, str], read_text: Reader, trusted_keys: Sequence[PublicKey] | None = None
) -> list[str]:
    """Every envelope must verify with signer.json's key and sign what the bundle holds now."""
    envelopes = sorted(p for p in hashed if p.startswith(PROVENANCE + "/") and p.endswith(".dsse.json"))
    if not envelopes and SIGNER not in hashed:
        return [f"{PROVENANCE}/: the bundle is not signed, and a trusted key was required"] if trusted_keys else []
    if SIGNER not in hashed:
        return [f"{SIGNER} is missing, so the signatures in {PROVENANCE}/ cannot be checked"]
    signer = loads_object(read_text(SIGNER))
    try:
        key = public_key_from_pem(str(signer.get("public_key", "")))
    except ValueError:
        return [f"{SIGNER}: holds no ed25519 public key"]
    findings = []
    if signer.get("keyid") != key.keyid:
        findings.append(f"{SIGNER}: records key ID {signer.get('keyid')}, its public key is {key.keyid}")
    if trusted_keys is not None and key.keyid not in {k.keyid for k in trusted_keys}:
        trusted = ", ".join(k.keyid for k in trusted_keys)
        findings.append(f"{SIGNER}: signed by {key.keyid}, which is not a trusted key ({trusted})")
    enveloped = set()
    for name in envelopes:
        if name == BUNDLE_ENVELOPE:
            continue
        run_id = name.removeprefix(PROVENANCE + "/").removesuffix(".intoto.dsse.json")
        statement = statement_name(run_id)
        enveloped.add(statement)
        check = verify_envelope(loads_object(read_text(name)), key)
        if check.problem:
            findings.append(f"{name}: {check.problem}")
        elif check.payload_type != INTOTO_PAYLOAD_TYPE:
            findings.append(f"{name}: payload type {check.payload_type!r} is not {INTOTO_PAYLOAD_TYPE}")
        elif statement not in hashed:
            findings.append(f"{name}: signs {statement}, which is missing")
        elif hashed[statement] != sha256_bytes(check.payload):
            findings.append(f"{statement} changed after it was signed ({name} signs other bytes)")
    for statement in sorted(p for p in hashed if p.startswith(PROVENANCE + "/") and p.endswith(".intoto.json")):
        if statement not in enveloped:
            findings.append(f"{statement} is not signed (written after `bundler sign`?)")
    return findings + _bundle_envelope_findings(hashed, read_text, key)


def _bundle_envelope_findings(hashed: Mapping[str, str], read_text: Reader, key: PublicKey) -> list[str]:
    if BUNDLE_ENVELOPE not in hashed:
        return [f"{BUNDLE_ENVELOPE} is missing, so the bundle's manifest is not signed"]
    check = verify_envelope(loads_object(read_text(BUNDLE_ENVELOPE)), key)
    if check.problem:
        return [f"{BUNDLE_ENVELOPE}: {check.problem}"]
    try:
        signed = json.loads(check.payload)
        assert check.payload_type == MANIFEST_PAYLOAD_TYPE and signed["schema"] == SIGNED_MANIFEST_SCHEMA
        signed_payload, signed_prov = dict(signed["payload"]), dict(signed["provenance"])
    except (ValueError, KeyError, TypeError, AssertionError):
        return [f"{BUNDLE_ENVELOPE}: the signed content is not a {SIGNED_MANIFEST_SCHEMA} manifest"]
    findings = []
    bundle_id = _bundle_id(read_text("bag-info.txt"))
    if signed.get("bundle_id") != bundle_id:
        findings.append(
            f"{BUNDLE_ENVELOPE}: signed for bundle {str(signed.get('bundle_id'))[:12]}, this bundle is {bundle_id[:12]}"
        )
    if signed.get("keyid") != key.keyid:
        findings.append(f"{BUNDLE_ENVELOPE}: names key {signed.get('keyid')}, signed by {key.keyid}")
    for signed_view, now in ((signed_payload, signed_payload_view(hashed)), (signed_prov, _provenance_view(hashed))):
        findings += [
            f"{BUNDLE_ENVELOPE}: {p} changed after signing"
            for p in sorted(signed_view)
            if p in now and now[p] != signed_view[p]
        ]
        findings += [f"{BUNDLE_ENVELOPE}: {p} was removed after signing" for p in sorted(set(signed_view) - set(now))]
        findings += [f"{BUNDLE_ENVELOPE}: {p} was added after signing" for p in sorted(set(now) - set(signed_view))]
    return findings


def _provenance_view(hashed: Mapping[str, str]) -> dict[str, str]:
    """The provenance files a bundle signature covers: all but the envelopes."""
    return {p: s for p, s in hashed.items() if p.startswith(PROVENANCE + "/") and not p.endswith(".dsse.json")}


def _bundle_id(bag_info: str | None) -> str:
    for line in (bag_info or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "Bundle-Id":
            return value.strip()
    return ""
