"""Local ed25519 keys, DSSE envelopes, and signing a bundle: all offline, no service, no network.

What is signed, and what covers what, is written down in bundler/provenance.py's docstring.

Keys are PEM files: the private key PKCS#8 (written 0600, never copied anywhere by bundler), the
public key SubjectPublicKeyInfo. A key's ID is `sha256:<hex>` of the public key's DER encoding, so
anyone can recompute it with `openssl pkey -pubin -in KEY.pub -outform DER | sha256sum`.

Envelopes follow DSSE v1 (https://github.com/secure-systems-lab/dsse/blob/master/envelope.md): the
signature is over PAE(payloadType, payload) = "DSSEv1 <len> <type> <len> <payload>", never over
re-serialised JSON, so the signed bytes are exactly the bytes that were written.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bundler.atomic import atomic_write_bytes, atomic_write_text
from bundler.bundle import _payload_hashes, _write_tags, bundle_id_of, list_runs, open_bundle
from bundler.errors import OutputExistsError, SigningKeyError
from bundler.hashing import canonical_json, sha256_bytes, sha256_file
from bundler.provenance import (
    BUNDLE_ENVELOPE,
    INTOTO_PAYLOAD_TYPE,
    MANIFEST_PAYLOAD_TYPE,
    PROVENANCE,
    SIGNED_MANIFEST_SCHEMA,
    SIGNER,
    SIGNER_SCHEMA,
    Reader,
    directory_reader,
    envelope_name,
    hash_bundle,
    loads_object,
    signed_payload_view,
    statement_findings,
    statement_name,
    write_provenance,
)

ALGORITHM = "ed25519"
# Read only when the private key file is encrypted; the password never reaches a file or a log.
PASSWORD_ENV = "BUNDLER_SIGNING_KEY_PASSWORD"


@dataclass(frozen=True)
class PublicKey:
    """An ed25519 public key with its ID (sha256 of the DER SubjectPublicKeyInfo)."""

    key: Ed25519PublicKey

    @property
    def pem(self) -> str:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    @property
    def keyid(self) -> str:
        der = self.key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return "sha256:" + hashlib.sha256(der).hexdigest()


def generate_key(out: Path) -> tuple[Path, PublicKey]:
    """Write a new private key to `out` (0600) and its public key to `out.pub`; refuse to overwrite."""
    public_path = out.with_name(out.name + ".pub")
    for path in (out, public_path):
        if path.exists():
            raise OutputExistsError(path)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL + 0600 from the first byte: the key is never readable by others, not even briefly.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public = PublicKey(private.public_key())
    atomic_write_bytes(public_path, public.pem.encode("ascii"))
    return public_path, public


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an ed25519 private key (PEM or OpenSSH); a wrong or missing file is a SigningKeyError."""
    data = _read(path)
    password = os.environ.get(PASSWORD_ENV)
    try:
        if data.startswith(b"-----BEGIN OPENSSH PRIVATE KEY"):
            key: Any = serialization.load_ssh_private_key(data, password.encode() if password else None)
        else:
            key = serialization.load_pem_private_key(data, password.encode() if password else None)
    except TypeError:
        raise SigningKeyError(path, f"the key is encrypted; set {PASSWORD_ENV} to its password") from None
    except ValueError as exc:
        if b"PUBLIC KEY" in data:
            raise SigningKeyError(path, "this is a public key; signing needs the private key") from None
        raise SigningKeyError(path, f"not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(path, f"a {type(key).__name__.removeprefix('_')} key; bundler signs with ed25519 only")
    return key


def load_public_key(path: Path) -> PublicKey:
    """Read an ed25519 public key (PEM or OpenSSH `ssh-ed25519 ...`), or derive it from a private key file."""
    data = _read(path)
    try:
        if data.startswith(b"ssh-ed25519"):
            key: Any = serialization.load_ssh_public_key(data)
        elif b"PRIVATE KEY" in data:
            key = load_private_key(path).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SigningKeyError(path, f"not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(path, "not an ed25519 key; bundler verifies ed25519 signatures only")
    return PublicKey(key)


def public_key_from_pem(pem: str) -> PublicKey:
    """Parse a recorded public key; raise ValueError when it is not an ed25519 PEM key."""
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an ed25519 public key")
    return PublicKey(key)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what the signature actually covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def sign_envelope(payload_type: str, payload: bytes, key: Ed25519PrivateKey) -> dict[str, Any]:
    """Return a DSSE envelope over `payload`, signed by `key` and naming its key ID."""
    keyid = PublicKey(key.public_key()).keyid
    signature = key.sign(pae(payload_type, payload))
    return {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [{"keyid": keyid, "sig": base64.b64encode(signature).decode("ascii")}],
    }


@dataclass(frozen=True)
class EnvelopeCheck:
    """What checking an envelope found: the payload it carries, and why it is not trusted (or None)."""

    payload_type: str
    payload: bytes
    problem: str | None


def verify_envelope(envelope: dict[str, Any], key: PublicKey) -> EnvelopeCheck:
    """Check that a DSSE envelope carries a valid signature by `key`; never raises on bad input."""
    try:
        payload_type = str(envelope["payloadType"])
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = list(envelope["signatures"])
    except (KeyError, TypeError, ValueError) as exc:
        return EnvelopeCheck("", b"", f"not a DSSE envelope ({type(exc).__name__}: {exc})")
    if not signatures:
        return EnvelopeCheck(payload_type, payload, "holds no signature")
    message = pae(payload_type, payload)
    others = []
    for entry in signatures:
        try:
            signature = base64.b64decode(entry["sig"], validate=True)
            key.key.verify(signature, message)
            return EnvelopeCheck(payload_type, payload, None)
        except (KeyError, TypeError, ValueError, InvalidSignature):
            others.append(str(entry.get("keyid", "no keyid")) if isinstance(entry, dict) else "malformed")
    if all(keyid == key.keyid for keyid in others):
        problem = f"the signature by {_short(key.keyid)} does not match the signed content"
        return EnvelopeCheck(payload_type, payload, problem)
    named = ", ".join(sorted({_short(k) for k in others}))
    return EnvelopeCheck(payload_type, payload, f"signed by another key ({named}), not by {_short(key.keyid)}")


def _short(keyid: str) -> str:
    return keyid[:23]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(path, "no such file") from None
    except OSError as exc:
        raise SigningKeyError(path, f"cannot be read ({exc.strerror})") from None


# --- signing a bundle, checking its signatures ---


def sign_bundle(bundle: Path, key_path: Path) -> dict[str, Any]:
    """Sign every run statement and the bundle's signed manifest with the ed25519 key at `key_path`.

    Writes missing statements first; refuses (VerifyFailed, exit 1) a bundle whose bag does not
    verify or whose statements no longer match its files, since signing would bless the change.
    """
    from bundler.bundle import verify_bundle
    from bundler.errors import VerifyFailed

    key = load_private_key(key_path)
    open_bundle(bundle)
    bag_findings = [f for f in verify_bundle(bundle).findings if not f.startswith(PROVENANCE + "/")]
    if bag_findings:
        raise VerifyFailed(bundle, bag_findings)
    for run_id in list_runs(bundle):
        if not (bundle / statement_name(run_id)).is_file():
            write_provenance(bundle, run_id)
    stale = statement_findings(hash_bundle(bundle), directory_reader(bundle))
    if stale:
        raise VerifyFailed(bundle, stale)

    public = PublicKey(key.public_key())
    signer = {"schema": SIGNER_SCHEMA, "algorithm": "ed25519", "keyid": public.keyid, "public_key": public.pem}
    atomic_write_text(bundle / SIGNER, canonical_json(signer))
    runs = sorted(p.name.removesuffix(".intoto.json") for p in (bundle / PROVENANCE).glob("*.intoto.json"))
    for run_id in runs:
        body = (bundle / statement_name(run_id)).read_bytes()
        atomic_write_text(bundle / envelope_name(run_id), canonical_json(sign_envelope(INTOTO_PAYLOAD_TYPE, body, key)))
    for old in (bundle / PROVENANCE).glob("*.intoto.dsse.json"):
        if old.name.removesuffix(".intoto.dsse.json") not in runs:
            old.unlink()
    manifest = signed_manifest(bundle, public.keyid)
    envelope = sign_envelope(MANIFEST_PAYLOAD_TYPE, canonical_json(manifest).encode("utf-8"), key)
    atomic_write_text(bundle / BUNDLE_ENVELOPE, canonical_json(envelope))
    _write_tags(bundle, _payload_hashes(bundle))
    return {
        "schema": "bundler.sign/1",
        "bundle": str(bundle),
        "bundle_id": bundle_id_of(bundle),
        "keyid": public.keyid,
        "runs": runs,
        "files": sorted([SIGNER, BUNDLE_ENVELOPE, *(envelope_name(r) for r in runs)]),
    }


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
        "payload": signed_payload_view(_payload_hashes(bundle)),
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
