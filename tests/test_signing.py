"""Local ed25519 keys and DSSE envelopes: real keys made in tmp_path, real signatures."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bundler.bundle.signing import (
    generate_key,
    load_private_key,
    load_public_key,
    pae,
    sign_envelope,
    verify_envelope,
)
from bundler.errors import OutputExistsError, SigningKeyError
from tests.conftest import run_cli


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    public_path, public = generate_key(tmp_path / "keys" / "signing.pem")
    mode = stat.S_IMODE((tmp_path / "keys" / "signing.pem").stat().st_mode)
    assert mode == 0o600
    assert public_path.name == "signing.pem.pub"
    assert load_public_key(public_path).keyid == public.keyid
    assert public.keyid.startswith("sha256:") and len(public.keyid) == 7 + 64


def test_keygen_never_overwrites_a_key(tmp_path: Path) -> None:
    generate_key(tmp_path / "k")
    before = (tmp_path / "k").read_bytes()
    with pytest.raises(OutputExistsError):
        generate_key(tmp_path / "k")
    assert (tmp_path / "k").read_bytes() == before


def test_keygen_cli_prints_the_key_id_of_the_public_key(tmp_path: Path) -> None:
    result = run_cli("keygen", "--out", str(tmp_path / "k"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == load_public_key(tmp_path / "k.pub").keyid


def test_key_id_is_the_sha256_of_the_der_public_key(tmp_path: Path) -> None:
    import hashlib

    public_path, public = generate_key(tmp_path / "k")
    key = serialization.load_pem_public_key(public_path.read_bytes())
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert public.keyid == "sha256:" + hashlib.sha256(der).hexdigest()


def test_a_public_key_given_as_the_signing_key_is_refused_with_a_hint(tmp_path: Path) -> None:
    public_path, _ = generate_key(tmp_path / "k")
    with pytest.raises(SigningKeyError, match="public key") as caught:
        load_private_key(public_path)
    assert "keygen" in caught.value.hint


def test_an_rsa_key_is_refused(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "rsa.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with pytest.raises(SigningKeyError, match="ed25519"):
        load_private_key(path)


def test_a_missing_key_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="no such file"):
        load_private_key(tmp_path / "absent.pem")


def test_an_encrypted_key_needs_its_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = tmp_path / "enc.pem"
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"correct horse"),
        )
    )
    monkeypatch.delenv("BUNDLER_SIGNING_KEY_PASSWORD", raising=False)
    with pytest.raises(SigningKeyError, match="BUNDLER_SIGNING_KEY_PASSWORD"):
        load_private_key(path)
    monkeypatch.setenv("BUNDLER_SIGNING_KEY_PASSWORD", "correct horse")
    assert load_private_key(path) is not None


def test_envelope_signed_by_a_key_verifies_with_that_key(tmp_path: Path) -> None:
    generate_key(tmp_path / "k")
    envelope = sign_envelope("application/vnd.in-toto+json", b'{"a": 1}\n', load_private_key(tmp_path / "k"))
    check = verify_envelope(envelope, load_public_key(tmp_path / "k.pub"))
    assert check.problem is None
    assert check.payload == b'{"a": 1}\n'


def test_envelope_by_another_key_is_named_as_such(tmp_path: Path) -> None:
    generate_key(tmp_path / "mine")
    _, theirs = generate_key(tmp_path / "theirs")
    envelope = sign_envelope("t", b"x", load_private_key(tmp_path / "theirs"))
    check = verify_envelope(envelope, load_public_key(tmp_path / "mine.pub"))
    assert check.problem is not None and "another key" in check.problem
    assert theirs.keyid[:23] in check.problem


def test_changing_the_payload_or_its_type_breaks_the_signature(tmp_path: Path) -> None:
    generate_key(tmp_path / "k")
    key = load_public_key(tmp_path / "k.pub")
    envelope = sign_envelope("t", b"payload", load_private_key(tmp_path / "k"))
    forged = {**envelope, "payload": base64.b64encode(b"payloaD").decode()}
    assert "does not match" in (verify_envelope(forged, key).problem or "")
    retyped = {**envelope, "payloadType": "u"}
    assert verify_envelope(retyped, key).problem is not None


def test_pae_matches_the_dsse_specification_example() -> None:
    # From the DSSE protocol document: PAE("http://example.com/HelloWorld", "hello world").
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_a_malformed_envelope_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    generate_key(tmp_path / "k")
    check = verify_envelope({"payload": "!!!"}, load_public_key(tmp_path / "k.pub"))
    assert check.problem is not None and "not a DSSE envelope" in check.problem
