"""OpenSSF Model Signing over adapters: made by `bundler sign`, checked by the model_signing CLI itself."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundler.bundle.bag import bundle_id_of
from bundler.bundle.verify import verify_bundle
from tests.conftest import run_cli
from tests.fixtures.bundles import make_card_bundle as make_run_bundle
from tests.fixtures.hub_server import HubServer

REPO_ID = "org/signed-adapter"


def model_signing_verify(model_dir: Path, signature: Path, public_key: Path) -> subprocess.CompletedProcess[str]:
    """The command the model card gives, run as a user would: the model_signing console script."""
    model_signing = shutil.which("model_signing")
    assert model_signing, "model-signing is not installed (pip install model-signing)"
    return subprocess.run(
        [model_signing, "verify", "key", str(model_dir), "--signature", str(signature)]
        + ["--public_key", str(public_key)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, str, Path]:
    """A run bundle signed with a key made by `bundler keygen` (EC P-256 by default)."""
    bundle, run_id = make_run_bundle(tmp_path / "b")
    key = tmp_path / "keys" / "signing.pem"
    made = run_cli("keygen", "--out", str(key))
    assert made.returncode == 0, made.stderr
    signed = run_cli("sign", str(bundle), "--key", str(key), "--json")
    assert signed.returncode == 0, signed.stderr
    assert json.loads(signed.stdout)["model_signatures"] == [f"data/runs/{run_id}/model.sig"]
    return bundle, run_id, key


def test_keygen_makes_an_ec_p256_key_in_openssl_pkcs8_pem(tmp_path: Path) -> None:
    result = run_cli("keygen", "--out", str(tmp_path / "k"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["algorithm"] == "ecdsa-p256"
    assert (tmp_path / "k").read_text().startswith("-----BEGIN PRIVATE KEY-----\n")
    # openssl itself reads both halves and names the curve.
    text = subprocess.run(
        ["openssl", "pkey", "-in", str(tmp_path / "k"), "-noout", "-text"], capture_output=True, text=True, check=True
    ).stdout
    assert "prime256v1" in text or "P-256" in text
    subprocess.run(["openssl", "pkey", "-pubin", "-in", str(tmp_path / "k.pub"), "-noout"], check=True)


def test_the_model_signing_cli_verifies_the_adapter_bundler_signed(signed: tuple[Path, str, Path]) -> None:
    bundle, run_id, key = signed
    run = bundle / "data" / "runs" / run_id
    result = model_signing_verify(run / "adapter", run / "model.sig", key.with_name(key.name + ".pub"))
    assert result.returncode == 0, result.stderr
    assert "Verification succeeded" in result.stdout


def test_signing_adapters_changes_no_run_id_and_no_bundle_id(tmp_path: Path) -> None:
    bundle, run_id = make_run_bundle(tmp_path / "b")
    before = bundle_id_of(bundle)
    assert run_cli("keygen", "--out", str(tmp_path / "k")).returncode == 0
    assert run_cli("sign", str(bundle), "--key", str(tmp_path / "k")).returncode == 0
    assert bundle_id_of(bundle) == before
    assert (bundle / "data" / "runs" / run_id / "model.sig").is_file()  # the run dir kept its name: its ID
    assert verify_bundle(bundle).findings == []
    # model.sig is written once: signing again keeps its bytes, so the first signature (which covers it)
    # stays valid, and both signatures verify.
    first = (bundle / "data" / "runs" / run_id / "model.sig").read_bytes()
    before = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    again = run_cli("sign", str(bundle), "--key", str(tmp_path / "k"), "--json")
    assert again.returncode == 0, again.stderr
    after = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file() and p not in before}
    assert {p: p.read_bytes() for p in before} == before  # no file of the bag changed ...
    assert all("provenance/signatures/0002-" in p.as_posix() for p in after)  # ... one signature dir was added
    assert json.loads(again.stdout)["model_signatures"] == []
    assert (bundle / "data" / "runs" / run_id / "model.sig").read_bytes() == first
    verified = run_cli("verify", str(bundle), "--key", str(tmp_path / "k.pub"), "--strict", "--json")
    assert verified.returncode == 0, verified.stdout
    assert [s["valid"] for s in json.loads(verified.stdout)["signatures"]] == [True, True]


def test_verify_key_checks_model_sig_and_a_changed_adapter_byte_fails_both(signed: tuple[Path, str, Path]) -> None:
    bundle, run_id, key = signed
    public = key.with_name(key.name + ".pub")
    run = bundle / "data" / "runs" / run_id
    ok = run_cli("verify", str(bundle), "--key", str(public))
    assert ok.returncode == 0, ok.stderr
    flip_last_byte(run / "adapter" / "adapter_model.safetensors")
    theirs = model_signing_verify(run / "adapter", run / "model.sig", public)
    assert theirs.returncode == 1
    assert "adapter_model.safetensors" in theirs.stderr
    ours = run_cli("verify", str(bundle), "--key", str(public))
    assert ours.returncode == 1
    assert f"data/runs/{run_id}/model.sig: not a valid signature" in ours.stderr
    assert "adapter_model.safetensors" in ours.stderr


def test_a_model_sig_by_an_unknown_key_fails_verify_with_exit_1(signed: tuple[Path, str, Path], tmp_path: Path) -> None:
    bundle, run_id, _ = signed
    assert run_cli("keygen", "--out", str(tmp_path / "other")).returncode == 0
    result = run_cli("verify", str(bundle), "--key", str(tmp_path / "other.pub"))
    assert result.returncode == 1
    assert f"data/runs/{run_id}/model.sig" in result.stderr and "Key mismatch" in result.stderr
    run = bundle / "data" / "runs" / run_id
    theirs = model_signing_verify(run / "adapter", run / "model.sig", tmp_path / "other.pub")
    assert theirs.returncode == 1


def test_an_ed25519_key_still_signs_and_verifies_the_bundle_without_model_sig(tmp_path: Path) -> None:
    bundle, run_id = make_run_bundle(tmp_path / "b")
    assert run_cli("keygen", "--out", str(tmp_path / "ed"), "--algorithm", "ed25519").returncode == 0
    result = run_cli("sign", str(bundle), "--key", str(tmp_path / "ed"))
    assert result.returncode == 0, result.stderr
    assert "ed25519 key cannot make model.sig" in result.stderr
    signature = run_cli("sign", str(bundle), "--key", str(tmp_path / "ed"), "--json")
    signer_json = bundle / json.loads(signature.stdout)["signature"] / "signer.json"
    assert not (bundle / "data" / "runs" / run_id / "model.sig").exists()
    assert json.loads(signer_json.read_text())["algorithm"] == "ed25519"
    assert run_cli("verify", str(bundle), "--key", str(tmp_path / "ed.pub")).returncode == 0


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    import huggingface_hub.constants

    with HubServer(tmp_path / "hub-storage") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_TOKEN", server.token)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-here"))
        yield server


def test_the_hub_copy_verifies_with_model_signing_and_a_changed_byte_fails(
    hub: HubServer, signed: tuple[Path, str, Path], tmp_path: Path
) -> None:
    from huggingface_hub import snapshot_download

    from bundler.publish.push import push_run

    bundle, run_id, key = signed
    record = push_run(bundle, REPO_ID, run_id=run_id)
    assert "model.sig" in record["files"]
    local = Path(
        snapshot_download(
            REPO_ID, revision=record["commit"], local_dir=tmp_path / "download", token=hub.token, endpoint=hub.endpoint
        )
    )
    assert {"adapter_model.safetensors", "adapter_config.json", "model.sig", "README.md"} <= {
        p.name for p in local.iterdir()
    }
    card = (local / "README.md").read_text()
    assert "model_signing verify key adapter --signature adapter/model.sig --public_key key.pub" in card
    public = key.with_name(key.name + ".pub")
    result = model_signing_verify(local, local / "model.sig", public)
    assert result.returncode == 0, result.stderr
    flip_last_byte(local / "adapter_config.json")
    result = model_signing_verify(local, local / "model.sig", public)
    assert result.returncode == 1
    assert "adapter_config.json" in result.stderr
