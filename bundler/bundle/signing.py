"""Local signing keys (EC P-256 by default, ed25519 still read), DSSE envelopes: offline, no service.

`bundler keygen` makes EC P-256 keys because OpenSSF Model Signing (bundler.bundle.oms) signs with
elliptic-curve keys only (P-256/384/521); ed25519 keys made by earlier versions keep signing and
verifying the bundle's own envelopes, but cannot make an OMS model.sig.

What is signed, and what covers what, is written down in bundler/bundle/attest.py's docstring.

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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bundler.bundle.atomic import atomic_write_bytes
from bundler.errors import OutputExistsError, SigningKeyError

ALGORITHM = "ed25519"
EC_P256 = "ecdsa-p256"
ALGORITHMS = (EC_P256, ALGORITHM)
# The curves OMS accepts (model_signing/_signing/sign_ec_key.py), each signed with its matching hash.
_EC_HASHES = {"secp256r1": hashes.SHA256, "secp384r1": hashes.SHA384, "secp521r1": hashes.SHA512}
PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
# Read only when the private key file is encrypted; the password never reaches a file or a log.
PASSWORD_ENV = "BUNDLER_SIGNING_KEY_PASSWORD"


@dataclass(frozen=True)
class PublicKey:
    """An ed25519 or EC public key with its ID (sha256 of the DER SubjectPublicKeyInfo)."""

    key: Ed25519PublicKey | ec.EllipticCurvePublicKey

    @property
    def algorithm(self) -> str:
        if isinstance(self.key, Ed25519PublicKey):
            return ALGORITHM
        return f"ecdsa-{self.key.curve.name}".replace("ecdsa-secp256r1", EC_P256)

    def verify(self, signature: bytes, message: bytes) -> None:
        """Raise InvalidSignature unless `signature` over `message` was made by this key."""
        if isinstance(self.key, Ed25519PublicKey):
            self.key.verify(signature, message)
        else:
            self.key.verify(signature, message, ec.ECDSA(_EC_HASHES[self.key.curve.name]()))

    @property
    def pem(self) -> str:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    @property
    def keyid(self) -> str:
        der = self.key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return "sha256:" + hashlib.sha256(der).hexdigest()


def generate_key(out: Path, algorithm: str = EC_P256) -> tuple[Path, PublicKey]:
    """Write a new private key to `out` (0600) and its public key to `out.pub`; refuse to overwrite.

    PKCS#8 PEM, as `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` writes it.
    """
    public_path = out.with_name(out.name + ".pub")
    for path in (out, public_path):
        if path.exists():
            raise OutputExistsError(path)
    private: PrivateKey = (
        Ed25519PrivateKey.generate() if algorithm == ALGORITHM else ec.generate_private_key(ec.SECP256R1())
    )
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


def load_private_key(path: Path) -> PrivateKey:
    """Read an EC or ed25519 private key (PEM or OpenSSH); a wrong or missing file is a SigningKeyError."""
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
    if not _is_supported(key.public_key()):
        raise SigningKeyError(path, f"{_kind(key)}; bundler signs with EC P-256/384/521 or ed25519 keys only")
    return key


def load_public_key(path: Path) -> PublicKey:
    """Read an EC or ed25519 public key (PEM or OpenSSH `ssh-ed25519 ...`), or derive it from a private key file."""
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
    if not _is_supported(key):
        raise SigningKeyError(path, f"{_kind(key)}; bundler verifies EC P-256/384/521 or ed25519 signatures only")
    return PublicKey(key)


def public_key_from_pem(pem: str) -> PublicKey:
    """Parse a recorded public key; raise ValueError when it is not an EC or ed25519 PEM key."""
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    if not _is_supported(key):
        raise ValueError("not an EC or ed25519 public key")
    return PublicKey(key)  # type: ignore[arg-type]


def _is_supported(key: Any) -> bool:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.name in _EC_HASHES
    return isinstance(key, Ed25519PublicKey)


def _kind(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"an EC key on curve {key.curve.name}"
    return f"a {type(key).__name__.removeprefix('_')} key"


def signer_record(public: PublicKey) -> dict[str, str]:
    """What a signature records about its key (signer.json): algorithm, key ID, public key. Never the private key."""
    return {
        "schema": "bundler.signer/1",
        "algorithm": public.algorithm,
        "keyid": public.keyid,
        "public_key": public.pem,
    }


def public_key_from_record(record: dict[str, Any]) -> PublicKey:
    """The public key a signer.json records; ValueError naming the problem when it cannot be used.

    The algorithm is read first so a second key type (issue 21: EC P-256) slots in beside ed25519 here.
    """
    algorithm = record.get("algorithm", ALGORITHM)
    if algorithm != ALGORITHM and not str(algorithm).startswith("ecdsa-"):
        raise ValueError(f"algorithm {algorithm!r}; this bundler checks {', '.join(ALGORITHMS)} signatures")
    try:
        key = public_key_from_pem(str(record.get("public_key", "")))
    except (ValueError, TypeError, UnicodeError) as exc:
        raise ValueError(f"not an EC or ed25519 PEM public key: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - cryptography raises UnsupportedAlgorithm for other key types
        raise ValueError(f"not an EC or ed25519 PEM public key: {type(exc).__name__}") from None
    if key.algorithm != algorithm:
        raise ValueError(f"records algorithm {algorithm!r}, its public key is {key.algorithm}")
    return key


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what the signature actually covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def sign_envelope(payload_type: str, payload: bytes, key: PrivateKey) -> dict[str, Any]:
    """Return a DSSE envelope over `payload`, signed by `key` and naming its key ID."""
    keyid = PublicKey(key.public_key()).keyid
    if isinstance(key, Ed25519PrivateKey):
        signature = key.sign(pae(payload_type, payload))
    else:
        signature = key.sign(pae(payload_type, payload), ec.ECDSA(_EC_HASHES[key.curve.name]()))
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
            key.verify(signature, message)
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
