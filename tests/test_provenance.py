"""Signed provenance: statements, RO-Crate, signatures, and `bundler verify` catching every forgery.

Bundles are built by hand with bundler.bundle.bag (fast); one slow test signs a real quickstart build.
Keys are real ed25519 keys made in tmp_path.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import pytest

from bundler.bundle import attest
from bundler.bundle import bag as fmt
from bundler.bundle.hashing import canonical_json
from bundler.bundle.signing import generate_key, load_public_key
from bundler.bundle.verify import verify_bundle
from bundler.errors import InputError
from bundler.publish import provenance
from bundler.publish.sign import sign_bundle
from tests.conftest import run_cli
from tests.fixtures.bundles import make_card_bundle
from tests.fixtures.hub_server import HubServer

CONFIG = """\
[project]
name = "prov"
seed = 7

[train]
seed = 7

[lora]
init_seed = 11

[split]
seed = 7

[publish]
license = "apache-2.0"
"""


def _json(obj: object) -> str:
    return canonical_json(obj)


def make_run_bundle(root: Path, adapter: bytes = b"adapter weights") -> tuple[Path, str]:
    """A sealed bundle with a recipe like the pipeline's and one recorded run."""
    recipe = root / "data" / "recipe"
    (recipe / "runtime").mkdir(parents=True)
    (recipe / "config.toml").write_text(CONFIG)
    (recipe / "requirements.lock").write_text("numpy==2.0.0 --hash=sha256:" + "0" * 64 + "\n")
    (recipe / "runtime" / "__init__.py").write_text("")
    (recipe / "runtime" / "train.py").write_text("print('train')\n")
    (recipe / "image.lock.json").write_text(
        _json(
            {
                "schema": "bundler.image/1",
                "reference": "127.0.0.1:5000/bundler/debian-python:3.11",
                "digest": "sha256:" + "ab" * 32,
                "platform": "linux/amd64",
                "python": "3.11",
                "cuda": "none",
            }
        )
    )
    (recipe / "source.json").write_text(
        _json({"schema": "bundler.source/1", "commit": "c" * 40, "tree": "d" * 40, "dirty": False, "repo": ""})
    )
    (recipe / "model.json").write_text(
        _json(
            {
                "schema": "bundler.model/1",
                "source": "hub",
                "id": "TinyOrg/tiny",
                "revision": "e" * 40,
                "files": {"model.safetensors": "1" * 64, "config.json": "2" * 64},
            }
        )
    )
    (recipe / "dataset.json").write_text(
        _json(
            {"schema": "bundler.dataset/1", "format": "jsonl", "source": "data/x.jsonl", "files": {"x.jsonl": "3" * 64}}
        )
    )
    (recipe / "splits.json").write_text(
        _json({"schema": "bundler.splits/1", "splits": {"train": {"root": "4" * 64, "ids": [], "count": 0}}})
    )
    fmt.seal_bundle(root)
    staged = root.parent / f".{root.name}-staged"
    (staged / "adapter").mkdir(parents=True)
    (staged / "adapter" / "adapter_model.safetensors").write_bytes(adapter)
    (staged / "adapter" / "adapter_config.json").write_text('{"r": 8}\n')
    (staged / "results.json").write_text(_json({"schema": "bundler.results/1", "steps": 4}))
    (staged / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    (staged / "env.json").write_text(
        _json(
            {
                "schema": "bundler.env/1",
                "runner": "venv",
                "python": "3.11.7",
                "cpu": {"name": "test"},
                "gpu": None,
                "libraries": {"torch": "2.13.0"},
                "image_digest": None,
                "determinism": {
                    "env.PYTHONHASHSEED": {"value": "0", "why": "w"},
                    "env.CUBLAS_WORKSPACE_CONFIG": {"value": ":4096:8", "why": "w"},
                },
            }
        )
    )
    run_json = _json(
        {
            "schema": "bundler.run/1",
            "runner": "venv",
            "started": "2026-11-24T10:00:00Z",
            "finished": "2026-11-24T10:01:00Z",
        }
    ).encode()
    run_id = fmt.add_run(root, staged, {"run.json": run_json, "README.md": b"# card\n"})
    return root, run_id


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, str]:
    bundle, run_id = make_run_bundle(tmp_path / "bundle")
    provenance.write_provenance(bundle, run_id)
    return bundle, run_id


@pytest.fixture
def key(tmp_path: Path) -> Path:
    generate_key(tmp_path / "keys" / "signer.pem")
    return tmp_path / "keys" / "signer.pem"


def findings(bundle: Path) -> list[str]:
    return [str(f) for f in verify_bundle(bundle).findings]


def reseal_tags(bundle: Path) -> None:
    """What a forger does after editing the tag area: make tagmanifest agree again."""
    fmt.write_tags(bundle, fmt.payload_hashes(bundle))


def reseal_tagmanifest(bundle: Path) -> None:
    """Rewrite only tagmanifest-sha256.txt from the tag files as they are (bag-info.txt left as edited)."""
    from bundler.bundle.hashing import manifest_lines

    tags = {
        p.relative_to(bundle).as_posix(): fmt.sha256_file(p)
        for p in fmt.list_files(bundle)
        if not p.relative_to(bundle).as_posix().startswith(("data/", fmt.SIGNATURES + "/"))
        and p.name != fmt.TAGMANIFEST
    }
    (bundle / fmt.TAGMANIFEST).write_text(manifest_lines(tags))


# --- writing ---


def test_write_provenance_keeps_the_bag_valid_for_bagit(recorded: tuple[Path, str]) -> None:
    bagit = pytest.importorskip("bagit")
    bundle, run_id = recorded
    assert findings(bundle) == []
    bagit.Bag(str(bundle)).validate()
    tags = (bundle / fmt.TAGMANIFEST).read_text()
    assert f"provenance/{run_id}.intoto.json" in tags
    assert "data/ro-crate-metadata.json" in (bundle / fmt.MANIFEST).read_text()


def test_write_provenance_is_deterministic(tmp_path: Path) -> None:
    one, run_one = make_run_bundle(tmp_path / "a")
    two, run_two = make_run_bundle(tmp_path / "elsewhere" / "b")
    provenance.write_provenance(one, run_one)
    provenance.write_provenance(two, run_two)
    for rel in (f"provenance/{run_one}.intoto.json", "data/ro-crate-metadata.json"):
        assert (one / rel).read_bytes() == (two / rel).read_bytes()


def test_statement_is_in_toto_v1_with_slsa_provenance(recorded: tuple[Path, str]) -> None:
    bundle, run_id = recorded
    statement = json.loads((bundle / attest.statement_name(run_id)).read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    adapter = f"data/runs/{run_id}/adapter/adapter_model.safetensors"
    assert subjects[adapter] == fmt.sha256_file(bundle / adapter)
    assert subjects[f"provenance/{run_id}.manifest-sha256.txt"] == fmt.sha256_file(
        bundle / f"provenance/{run_id}.manifest-sha256.txt"
    )
    build = statement["predicate"]["buildDefinition"]
    assert build["externalParameters"]["seeds"] == {
        "project.seed": 7,
        "train.seed": 7,
        "lora.init_seed": 11,
        "split.seed": 7,
    }
    assert build["externalParameters"]["config"]["project"]["name"] == "prov"
    deps = {d["name"]: d for d in build["resolvedDependencies"]}
    assert deps["data/recipe/requirements.lock"]["digest"]["sha256"] == fmt.sha256_file(
        bundle / "data/recipe/requirements.lock"
    )
    assert deps["127.0.0.1:5000/bundler/debian-python:3.11"]["digest"] == {"sha256": "ab" * 32}
    assert deps["code"]["digest"] == {"gitCommit": "c" * 40, "gitTree": "d" * 40}
    assert deps["model/model.safetensors"]["digest"]["sha256"] == "1" * 64
    assert deps["model/model.safetensors"]["annotations"]["revision"] == "e" * 40
    assert deps["dataset/x.jsonl"]["digest"]["sha256"] == "3" * 64
    assert deps["data/recipe/splits.json"]["annotations"]["roots"] == {"train": "4" * 64}
    details = statement["predicate"]["runDetails"]
    assert details["builder"]["id"].startswith("urn:bundler:builder:bundler@")
    assert details["metadata"]["invocationId"] == run_id
    env = next(b for b in details["byproducts"] if b["name"].endswith("env.json"))
    assert env["annotations"]["runner"] == "venv"
    assert env["annotations"]["hardware"]["device"] == "cpu"


def test_run_manifest_leaves_out_files_that_publishing_rewrites(recorded: tuple[Path, str]) -> None:
    bundle, run_id = recorded
    text = (bundle / attest.run_manifest_name(run_id)).read_text()
    assert f"data/runs/{run_id}/run.json" in text
    assert f"data/runs/{run_id}/README.md" not in text
    assert "data/recipe/config.toml" in text


def test_ro_crate_is_a_process_run_crate_for_the_rocrate_library(recorded: tuple[Path, str]) -> None:
    rocrate = pytest.importorskip("rocrate.rocrate")
    bundle, run_id = recorded
    crate = rocrate.ROCrate(str(bundle / "data"))
    assert [p.id for p in crate.root_dataset["conformsTo"]] == ["https://w3id.org/ro/wfrun/process/0.5"]
    actions = [e for e in crate.get_entities() if e.type == "CreateAction"]
    assert len(actions) == 1
    action = actions[0]
    assert action["instrument"].id == "recipe/runtime/"
    assert action["instrument"]["identifier"].startswith("sha256:")
    inputs = {e.id for e in action["object"]}
    assert {"recipe/config.toml", "recipe/requirements.lock", "recipe/splits.json", "recipe/model.json"} <= inputs
    results = {e.id: e for e in action["result"]}
    adapter = results[f"runs/{run_id}/adapter/adapter_model.safetensors"]
    assert adapter["sha256"] == fmt.sha256_file(bundle / "data" / adapter.id)
    assert f"runs/{run_id}/metrics.jsonl" in results
    assert action["containerImage"]["sha256"] == "ab" * 32
    assert {e["name"]: e["value"] for e in action["environment"]} == {
        "PYTHONHASHSEED": "0",
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
    }
    for entity in crate.get_entities():  # every data entity the crate names exists in the payload
        if entity.type == "File":
            assert (bundle / "data" / entity.id).is_file(), entity.id


# --- verifying ---


def signature_dir(bundle: Path) -> Path:
    """The newest signature directory."""
    return sorted((bundle / fmt.SIGNATURES).iterdir())[-1]


def kinds(bundle: Path, **checks: object) -> set[tuple[str, str]]:
    return {(f.kind, f.path) for f in verify_bundle(bundle, **checks).findings}  # type: ignore[arg-type]


def pub(key: Path) -> object:
    return load_public_key(key.with_name(key.name + ".pub"))


def test_sign_then_verify_is_ok(recorded: tuple[Path, str], key: Path) -> None:
    bundle, run_id = recorded
    signed = run_cli("sign", str(bundle), "--key", str(key), "--json")
    assert signed.returncode == 0, signed.stderr
    record = json.loads(signed.stdout)
    assert record["keyid"] == pub(key).keyid  # type: ignore[attr-defined]
    assert record["runs"] == [run_id]
    verified = run_cli("verify", str(bundle), "--key", str(key.with_name(key.name + ".pub")))
    assert verified.returncode == 0, verified.stderr
    assert record["signature"] in verified.stdout
    assert (bundle / record["signature"] / attest.envelope_file(run_id)).is_file()


def test_sign_writes_missing_statements_first(tmp_path: Path, key: Path) -> None:
    bundle, run_id = make_run_bundle(tmp_path / "b")
    sign_bundle(bundle, key)
    assert (bundle / attest.statement_name(run_id)).is_file()
    assert findings(bundle) == []


def test_a_signature_covers_every_file_tag_files_and_card_included(recorded: tuple[Path, str], key: Path) -> None:
    bundle, run_id = recorded
    sign_bundle(bundle, key)
    signed = json.loads(
        base64.b64decode(json.loads((signature_dir(bundle) / "bundle.dsse.json").read_text())["payload"])
    )
    present = {p.relative_to(bundle).as_posix() for p in fmt.list_files(bundle)}
    assert set(signed["files"]) == {p for p in present if not p.startswith(fmt.SIGNATURES + "/")}
    for rel in ("bagit.txt", "bag-info.txt", "tagmanifest-sha256.txt", f"data/runs/{run_id}/README.md"):
        assert rel in signed["files"]


def test_signing_changes_no_file_of_the_bag(recorded: tuple[Path, str], tmp_path: Path) -> None:
    # An ed25519 key: an EC key's first sign also adds each run's model.sig (tests/test_oms.py checks that
    # every later sign changes no file).
    bundle, _ = recorded
    key = tmp_path / "ed25519.pem"
    generate_key(key, "ed25519")
    before = {p: p.read_bytes() for p in fmt.list_files(bundle)}
    sign_bundle(bundle, key)
    after = {p: p.read_bytes() for p in fmt.list_files(bundle) if fmt.SIGNATURES not in p.as_posix()}
    assert after == before


@pytest.mark.parametrize(
    "edit",
    ["card license", "card accuracy", "bag-info line", "bag-info duplicate line", "bagit.txt"],
)
def test_editing_any_signed_file_fails_verify_with_the_key(recorded: tuple[Path, str], key: Path, edit: str) -> None:
    bundle, run_id = recorded
    card = bundle / "data" / "runs" / run_id / "README.md"
    card.write_text("---\nlicense: apache-2.0\n---\n# card\naccuracy: 0.71\n")
    fmt.reseal_run(bundle, run_id)
    sign_bundle(bundle, key)
    info = bundle / "bag-info.txt"
    if edit == "card license":
        card.write_text(card.read_text().replace("apache-2.0", "mit"))
        fmt.reseal_run(bundle, run_id)
        target = card.relative_to(bundle).as_posix()
    elif edit == "card accuracy":
        card.write_text(card.read_text().replace("0.71", "0.99"))
        fmt.reseal_run(bundle, run_id)
        target = card.relative_to(bundle).as_posix()
    elif edit in ("bag-info line", "bag-info duplicate line"):
        line = "Contact-Name: mallory\n" if edit == "bag-info line" else info.read_text().splitlines(keepends=True)[0]
        info.write_text(info.read_text() + line)
        target = "bag-info.txt"
    else:
        (bundle / "bagit.txt").write_text("BagIt-Version: 1.0\nTag-File-Character-Encoding: utf-8\n")
        target = "bagit.txt"
    reseal_tagmanifest(bundle)  # the forger makes every checksum agree again
    result = run_cli("verify", str(bundle), "--key", str(key.with_name(key.name + ".pub")))
    assert result.returncode == 1, result.stdout
    assert f"{target}: changed after {fmt.SIGNATURES}/" in result.stderr


def test_a_signed_file_removed_fails_and_its_bytes_are_checked_not_its_manifest_line(
    recorded: tuple[Path, str], key: Path
) -> None:
    bundle, run_id = recorded
    sign_bundle(bundle, key)
    (bundle / "data" / "runs" / run_id / "README.md").unlink()
    fmt.reseal_run(bundle, run_id)
    assert ("signed-missing", f"data/runs/{run_id}/README.md") in kinds(bundle, trusted_keys=[pub(key)])


def test_files_added_after_signing_are_unsigned_additions_failing_only_when_strict(
    recorded: tuple[Path, str], key: Path
) -> None:
    bundle, run_id = recorded
    sign_bundle(bundle, key)
    fmt.record_run_file(bundle, run_id, "publish.json", b'{"repo": "org/name"}\n')
    trusted = [pub(key)]
    report = verify_bundle(bundle, trusted_keys=trusted)  # type: ignore[arg-type]
    assert report.ok and report.unsigned == [f"data/runs/{run_id}/publish.json"]
    strict = verify_bundle(bundle, trusted_keys=trusted, strict=True)  # type: ignore[arg-type]
    assert [(f.kind, f.path) for f in strict.findings] == [("unsigned-addition", f"data/runs/{run_id}/publish.json")]
    result = run_cli("verify", str(bundle), "--strict", "--key", str(key.with_name(key.name + ".pub")))
    assert result.returncode == 1 and "publish.json" in result.stderr


def test_a_run_added_after_signing_is_unsigned_until_signed_again(
    recorded: tuple[Path, str], key: Path, tmp_path: Path
) -> None:
    bundle, _ = recorded
    sign_bundle(bundle, key)
    staged = tmp_path / "second"
    (staged / "adapter").mkdir(parents=True)
    (staged / "adapter" / "adapter_model.safetensors").write_bytes(b"second run")
    second = fmt.add_run(bundle, staged, {"run.json": b'{"runner": "host"}\n'})
    provenance.write_provenance(bundle, second)
    report = verify_bundle(bundle)
    assert report.ok, report.findings
    assert attest.statement_name(second) in report.unsigned and attest.CRATE in report.unsigned
    sign_bundle(bundle, key)
    report = verify_bundle(bundle, trusted_keys=[pub(key)])  # type: ignore[list-item]
    assert report.ok and report.unsigned == []
    assert [s["valid"] for s in report.signatures] == [True, True]  # re-signing left the first one valid


def test_resigning_by_another_key_never_invalidates_the_first(
    recorded: tuple[Path, str], key: Path, tmp_path: Path
) -> None:
    bundle, _ = recorded
    sign_bundle(bundle, key)
    generate_key(tmp_path / "second.pem")
    sign_bundle(bundle, tmp_path / "second.pem")
    for trusted in (key, tmp_path / "second.pem"):
        assert verify_bundle(bundle, trusted_keys=[pub(trusted)], strict=True).ok  # type: ignore[list-item]


def test_an_envelope_by_another_key_fails_verify(recorded: tuple[Path, str], key: Path, tmp_path: Path) -> None:
    bundle, run_id = recorded
    sign_bundle(bundle, key)
    generate_key(tmp_path / "mallory.pem")
    forged = tmp_path / "forged"
    shutil.copytree(bundle, forged)
    shutil.rmtree(forged / fmt.SIGNATURES)
    sign_bundle(forged, tmp_path / "mallory.pem")
    envelope = signature_dir(bundle) / attest.envelope_file(run_id)
    shutil.copy(signature_dir(forged) / attest.envelope_file(run_id), envelope)
    result = run_cli("verify", str(bundle))
    assert result.returncode == 1
    assert "signed by another key" in result.stderr
    assert envelope.relative_to(bundle).as_posix() in result.stderr


def test_a_bundle_changed_and_resigned_by_another_key_fails_against_the_trusted_key(
    recorded: tuple[Path, str], key: Path, tmp_path: Path
) -> None:
    bundle, run_id = recorded
    sign_bundle(bundle, key)
    card = bundle / "data" / "runs" / run_id / "README.md"
    card.write_text("# a card mallory prefers\n")
    fmt.reseal_run(bundle, run_id)
    generate_key(tmp_path / "mallory.pem")
    sign_bundle(bundle, tmp_path / "mallory.pem")
    trusted = key.with_name(key.name + ".pub")
    assert run_cli("verify", str(bundle)).returncode == 0, "self-consistent: only a trusted key can tell"
    refused = run_cli("verify", str(bundle), "--key", str(trusted))
    assert refused.returncode == 1 and f"data/runs/{run_id}/README.md: changed after" in refused.stderr
    only_mallory = tmp_path / "only"
    shutil.copytree(bundle, only_mallory)
    shutil.rmtree(only_mallory / fmt.SIGNATURES / sorted(os.listdir(bundle / fmt.SIGNATURES))[0])
    assert ("untrusted", fmt.SIGNATURES) in kinds(only_mallory, trusted_keys=[pub(key)])


def test_an_unsigned_bundle_fails_when_a_trusted_key_is_required(recorded: tuple[Path, str], key: Path) -> None:
    bundle, _ = recorded
    assert ("not-signed", "provenance") in kinds(bundle, trusted_keys=[load_public_key(key)])


def test_a_statement_whose_subject_digest_does_not_match_fails_verify(recorded: tuple[Path, str]) -> None:
    bundle, run_id = recorded
    path = bundle / attest.statement_name(run_id)
    statement = json.loads(path.read_text())
    statement["subject"][0]["digest"]["sha256"] = "f" * 64
    path.write_text(canonical_json(statement))
    reseal_tags(bundle)  # the bag alone is consistent again; only the statement is wrong
    result = run_cli("verify", str(bundle))
    assert result.returncode == 1
    assert f"{statement['subject'][0]['name']}: has sha256" in result.stderr
    assert attest.statement_name(run_id) in result.stderr


def test_an_adapter_swapped_and_resealed_is_caught_by_the_statement(recorded: tuple[Path, str]) -> None:
    bundle, run_id = recorded
    adapter = f"data/runs/{run_id}/adapter/adapter_model.safetensors"
    (bundle / adapter).write_bytes(b"backdoored weights")
    fmt.seal_bundle(bundle)  # manifests rewritten: the bag verifies, the run ID and the statement must not
    found = kinds(bundle)
    assert ("statement", adapter) in found and ("run-id", f"data/runs/{run_id}/") in found


def test_sign_then_change_a_file_fails_verify(recorded: tuple[Path, str], key: Path) -> None:
    bundle, _ = recorded
    sign_bundle(bundle, key)
    (bundle / "data" / "recipe" / "config.toml").write_text(CONFIG.replace("seed = 7", "seed = 8"))
    fmt.seal_bundle(bundle)  # even with the bag's manifests made consistent again
    result = run_cli("verify", str(bundle))
    assert result.returncode == 1
    assert f"data/recipe/config.toml: changed after {fmt.SIGNATURES}/" in result.stderr


def test_a_statement_rewritten_after_signing_fails_verify(recorded: tuple[Path, str], key: Path) -> None:
    bundle, run_id = recorded
    sign_bundle(bundle, key)
    path = bundle / attest.statement_name(run_id)
    statement = json.loads(path.read_text())
    statement["predicate"]["runDetails"]["builder"]["id"] = "urn:someone:else"
    path.write_text(canonical_json(statement))
    reseal_tags(bundle)
    assert ("signed-changed", attest.statement_name(run_id)) in kinds(bundle)


def test_sign_refuses_a_bundle_that_fails_verify(recorded: tuple[Path, str], key: Path) -> None:
    bundle, _ = recorded
    (bundle / "data" / "recipe" / "config.toml").write_text("changed\n")
    result = run_cli("sign", str(bundle), "--key", str(key))
    assert result.returncode == 1
    assert "data/recipe/config.toml: manifest-sha256.txt says sha256" in result.stderr
    assert not (bundle / fmt.SIGNATURES).exists()


def test_sign_is_atomic_and_can_run_again_after_a_failed_write(
    recorded: tuple[Path, str], key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    bundle, _ = recorded
    real_fsync = os.fsync
    calls = []

    def full_disk(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the second signature file: one is written, the rest are not
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(InputError, match="No space left on device; nothing was added"):
        sign_bundle(bundle, key)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not (bundle / fmt.SIGNATURES).exists() or not any((bundle / fmt.SIGNATURES).iterdir())
    assert verify_bundle(bundle).ok
    sign_bundle(bundle, key)
    assert verify_bundle(bundle, trusted_keys=[pub(key)]).ok  # type: ignore[list-item]
    assert not [p for p in bundle.parent.iterdir() if p.name.endswith(".partial")]


def test_a_killed_sign_leaves_no_signature_and_the_next_sign_cleans_up(recorded: tuple[Path, str], key: Path) -> None:
    bundle, _ = recorded
    stale = bundle.parent / f".{bundle.name}.sign-dead.partial"
    stale.mkdir()
    (stale / "signer.json").write_text("{}")
    sign_bundle(bundle, key)
    assert not stale.exists()


def test_sign_with_a_public_key_is_an_input_error(recorded: tuple[Path, str], key: Path) -> None:
    bundle, _ = recorded
    result = run_cli("sign", str(bundle), "--key", str(key.with_name(key.name + ".pub")))
    assert result.returncode == 2
    assert "public key" in result.stderr and "hint:" in result.stderr


def test_the_private_key_never_enters_the_bundle(recorded: tuple[Path, str], key: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from bundler.bundle.signing import load_private_key

    bundle, _ = recorded
    sign_bundle(bundle, key)
    private = load_private_key(key)
    if hasattr(private, "private_numbers"):  # EC (keygen's default since issue 21): the scalar
        raw = private.private_numbers().private_value.to_bytes(32, "big")
    else:
        raw = private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
    pem_body = b"".join(key.read_bytes().splitlines()[1:-1])
    needles = [raw, raw.hex().encode(), base64.b64encode(raw), pem_body, b"PRIVATE KEY"]
    for path in fmt.list_files(bundle):
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{path} holds private key material"
    signer = json.loads((signature_dir(bundle) / "signer.json").read_text())
    assert signer["public_key"].startswith("-----BEGIN PUBLIC KEY-----")


def test_a_signed_bundle_gets_the_same_verdict_as_an_exported_tar(
    recorded: tuple[Path, str], key: Path, tmp_path: Path
) -> None:
    from bundler.bundle.archive import export_bundle, verify_archive

    bundle, run_id = recorded
    sign_bundle(bundle, key)
    export_bundle(bundle, tmp_path / "bundle.tar")
    trusted = key.with_name(key.name + ".pub")
    assert run_cli("verify", str(tmp_path / "bundle.tar"), "--key", str(trusted)).returncode == 0
    fmt.record_run_file(bundle, run_id, "README.md", b"# changed after signing\n")
    # export refuses a bundle that fails verify, so the changed bundle is packed with tarfile directly
    import tarfile

    with tarfile.open(tmp_path / "changed.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(bundle, arcname="bundle-x")
    as_dir = verify_bundle(bundle, trusted_keys=[pub(key)])  # type: ignore[list-item]
    as_tar = verify_archive(tmp_path / "changed.tar", trusted_keys=[pub(key)])
    assert not as_dir.ok and sorted(as_dir.findings) == sorted(as_tar.findings)


@pytest.mark.slow
def test_signed_quickstart_build_verifies_and_catches_a_changed_adapter(quickstart: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    built = run_cli("build", str(quickstart), "--out", str(out), "--json")
    assert built.returncode == 0, built.stderr
    run_id = json.loads(built.stdout)["run_id"]
    assert run_cli("verify", str(out)).returncode == 0  # statements are written at run time
    assert run_cli("keygen", "--out", str(tmp_path / "k.pem")).returncode == 0
    signed = run_cli("sign", str(out), "--key", str(tmp_path / "k.pem"))
    assert signed.returncode == 0, signed.stderr
    assert run_cli("verify", str(out), "--key", str(tmp_path / "k.pem.pub"), "--strict").returncode == 0
    statement = json.loads((out / attest.statement_name(run_id)).read_text())
    names = {s["name"] for s in statement["subject"]}
    assert f"data/runs/{run_id}/adapter/adapter_model.safetensors" in names
    adapter = out / "data" / "runs" / run_id / "adapter" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:-1] + b"\x00")
    result = run_cli("verify", str(out))
    assert result.returncode == 1
    assert "adapter_model.safetensors" in result.stderr


# --- the card and the push ---


def test_the_card_links_the_signed_statement_only_once_signed(recorded: tuple[Path, str], key: Path) -> None:
    from bundler.publish.card import provenance_rows

    bundle, run_id = recorded
    assert provenance_rows(bundle, run_id) == []
    sign_bundle(bundle, key)
    rows = dict(provenance_rows(bundle, run_id))
    envelope = (signature_dir(bundle) / attest.envelope_file(run_id)).relative_to(bundle).as_posix()
    assert f"(bundle/{envelope})" in rows["Signed provenance"]
    assert load_public_key(key).keyid in rows["Signing key"]
    assert "this card included" in rows["Signature covers"]


def test_a_signed_run_pushes_its_signed_statement_and_verifies_once_signed_again(
    tmp_path: Path, key: Path, hub: HubServer
) -> None:
    from huggingface_hub import hf_hub_download

    from bundler.bundle.signing import verify_envelope
    from bundler.publish.push import push_run

    bundle, run_id = make_card_bundle(tmp_path / "b")
    sign_bundle(bundle, key)
    envelope_path = (signature_dir(bundle) / attest.envelope_file(run_id)).relative_to(bundle).as_posix()
    record = push_run(bundle, "org/signed", run_id=run_id)

    def fetch(path: str) -> bytes:
        local = hf_hub_download(
            "org/signed",
            path,
            revision=record["commit"],
            endpoint=hub.endpoint,
            cache_dir=tmp_path / "cache",
            token=hub.token,
        )
        return Path(local).read_bytes()

    envelope = json.loads(fetch(f"bundle/{envelope_path}"))
    readme = fetch("README.md").decode()
    adapter = fetch("adapter_model.safetensors")
    check = verify_envelope(envelope, load_public_key(key))
    assert check.problem is None
    statement = json.loads(check.payload)
    subjects = {s["name"].rsplit("/", 1)[-1]: s["digest"]["sha256"] for s in statement["subject"]}
    assert subjects["adapter_model.safetensors"] == fmt.sha256_bytes(adapter)  # what the Hub serves is what was signed
    assert f"bundle/{envelope_path}" in readme
    # The push re-rendered the card (a signed file) and added publish.json: the signature says so...
    assert ("signed-changed", f"data/runs/{run_id}/README.md") in kinds(bundle)
    sign_bundle(bundle, key)  # ...until the publisher vouches for the pushed card by signing again
    assert findings(bundle) == []
