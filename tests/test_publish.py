"""Publishing through huggingface_hub, against a local server that speaks the Hub's HTTP API."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bundler.bundle import bag as fmt
from bundler.bundle.hashing import sha256_bytes
from bundler.bundle.verify import verify_bundle
from bundler.errors import (
    CardMetadataError,
    HubAuthError,
    HubUnavailableError,
    InputError,
    InvalidRepoIdError,
    MissingAdapterError,
)
from bundler.publish import push as publish
from bundler.publish.push import push_run
from tests.conftest import run_cli
from tests.fixtures.bundles import make_card_bundle
from tests.fixtures.hub_server import HubServer

REPO_ID = "org/support-adapter"
UPLOADING = {"create_repo", "create_branch", "preupload", "lfs_batch", "lfs_upload", "commit"}


@pytest.fixture
def run_bundle(tmp_path: Path) -> tuple[Path, str]:
    return make_card_bundle(tmp_path / "b")


def download(hub: HubServer, path: str, revision: str, cache: Path) -> bytes:
    from huggingface_hub import hf_hub_download

    local = hf_hub_download(REPO_ID, path, revision=revision, endpoint=hub.endpoint, cache_dir=cache, token=hub.token)
    return Path(local).read_bytes()


def uploads(hub: HubServer) -> list[str]:
    return [name for name, _ in hub.requests if name in UPLOADING]


def test_pushed_files_download_back_byte_identical(
    hub: HubServer, run_bundle: tuple[Path, str], tmp_path: Path
) -> None:
    bundle, run_id = run_bundle
    record = push_run(bundle, REPO_ID, run_id=run_id)
    run_dir = bundle / "data" / "runs" / run_id
    assert set(record["files"]) >= {
        "adapter_model.safetensors",
        "adapter_config.json",
        "README.md",
        "loss.png",
        "bundle/manifest-sha256.txt",
    }
    expected = {
        "adapter_model.safetensors": (run_dir / "adapter" / "adapter_model.safetensors").read_bytes(),
        "adapter_config.json": (run_dir / "adapter" / "adapter_config.json").read_bytes(),
        "README.md": (run_dir / "README.md").read_bytes(),
        "loss.png": (run_dir / "loss.png").read_bytes(),
    }
    for path, sha in record["files"].items():
        data = download(hub, path, record["commit"], tmp_path / "cache")
        assert sha256_bytes(data) == sha, path
        if path in expected:
            assert data == expected[path], path
    assert hub.calls("lfs_upload") == 2  # safetensors and png go through LFS basic transfer, not Xet
    assert record["commit"] == hub.head(REPO_ID).oid
    assert record["url"] == f"{hub.endpoint}/{REPO_ID}"


def test_push_record_is_written_into_the_bundle_and_it_still_verifies(
    hub: HubServer, run_bundle: tuple[Path, str]
) -> None:
    import bagit

    bundle, run_id = run_bundle
    record = push_run(bundle, REPO_ID, run_id=run_id)
    written = json.loads((bundle / "data" / "runs" / run_id / "publish.json").read_text())
    assert written == {k: v for k, v in record.items() if k != "new_commit"}
    assert written["schema"] == "bundler.publish/1" and written["revision"] == "main"
    assert verify_bundle(bundle).findings == []
    bagit.Bag(str(bundle)).validate()


def test_the_pushed_card_names_the_repo_to_load_from(
    hub: HubServer, run_bundle: tuple[Path, str], tmp_path: Path
) -> None:
    bundle, run_id = run_bundle
    record = push_run(bundle, REPO_ID, run_id=run_id)
    card = download(hub, "README.md", record["commit"], tmp_path / "cache").decode()
    assert f'PeftModel.from_pretrained(base, "{REPO_ID}")' in card
    assert "base_model: TinyOrg/tiny-llama" in card


def test_pushing_the_same_run_again_makes_no_new_commit(hub: HubServer, run_bundle: tuple[Path, str]) -> None:
    bundle, run_id = run_bundle
    first = push_run(bundle, REPO_ID, run_id=run_id)
    commits = len(hub.repos[REPO_ID].commits)
    second = push_run(bundle, REPO_ID, run_id=run_id)
    assert first["new_commit"] is True
    assert second["new_commit"] is False
    assert second["commit"] == first["commit"]
    assert len(hub.repos[REPO_ID].commits) == commits


def test_a_500_on_the_first_commit_is_retried_once_and_commits_once(
    hub: HubServer, run_bundle: tuple[Path, str]
) -> None:
    bundle, run_id = run_bundle
    hub.fail_next("commit", 500)
    record = push_run(bundle, REPO_ID, run_id=run_id)
    assert hub.calls("commit") == 2
    head = hub.head(REPO_ID)
    assert record["commit"] == head.oid
    assert hub.repos[REPO_ID].commits[head.parent].message == "initial commit"  # exactly one commit was added


def test_a_hub_that_keeps_failing_gives_up_and_leaves_no_publish_record(
    hub: HubServer, run_bundle: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle, run_id = run_bundle
    monkeypatch.setattr(publish, "RETRY_DELAYS_S", (0.0, 0.0, 0.0))
    hub.fail_next("commit", 503, times=10)
    with pytest.raises(HubUnavailableError, match="after 4 attempt"):
        push_run(bundle, REPO_ID, run_id=run_id)
    assert hub.calls("commit") == 4
    assert not (bundle / "data" / "runs" / run_id / "publish.json").exists()
    assert verify_bundle(bundle).findings == []


def test_push_to_a_repo_that_already_exists_adds_a_commit_on_top(hub: HubServer, run_bundle: tuple[Path, str]) -> None:
    bundle, run_id = run_bundle
    before = hub.commit_files(REPO_ID, {"notes.txt": b"written by someone else\n"})
    record = push_run(bundle, REPO_ID, run_id=run_id)
    head = hub.head(REPO_ID)
    assert head.parent == before and record["commit"] == head.oid
    assert "notes.txt" in head.files and "adapter_model.safetensors" in head.files


def test_push_to_a_branch_leaves_main_alone(hub: HubServer, run_bundle: tuple[Path, str], tmp_path: Path) -> None:
    bundle, run_id = run_bundle
    record = push_run(bundle, REPO_ID, run_id=run_id, revision="run-1")
    assert record["revision"] == "run-1"
    assert "adapter_model.safetensors" not in hub.head(REPO_ID, "main").files
    assert download(hub, "adapter_config.json", "run-1", tmp_path / "cache")


def test_private_flag_creates_a_private_repo(hub: HubServer, run_bundle: tuple[Path, str]) -> None:
    bundle, run_id = run_bundle
    push_run(bundle, REPO_ID, run_id=run_id, private=True)
    assert hub.repos[REPO_ID].private is True


def test_the_token_is_sent_but_never_written_or_logged(
    hub: HubServer, run_bundle: tuple[Path, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bundle, run_id = run_bundle
    caplog.set_level(logging.DEBUG)
    push_run(bundle, REPO_ID, run_id=run_id)
    assert any(h.get("authorization") == f"Bearer {hub.token}" for h in hub.headers_seen)
    assert hub.token not in caplog.text
    for path in [*bundle.rglob("*"), *(tmp_path / "hub-storage").rglob("*")]:
        if path.is_file():
            assert hub.token.encode() not in path.read_bytes(), path
    assert not any(hub.token.encode() in body for body in hub.bodies_seen)


@pytest.mark.parametrize("repo_id", ["no-namespace", "org/name/extra", "org/na me", "org/-bad-", "../etc/x"])
def test_an_invalid_repo_id_is_refused_before_any_request(
    hub: HubServer, run_bundle: tuple[Path, str], repo_id: str
) -> None:
    bundle, run_id = run_bundle
    with pytest.raises(InvalidRepoIdError):
        push_run(bundle, repo_id, run_id=run_id)
    assert hub.requests == []


def test_a_run_without_an_adapter_is_refused_before_any_request(hub: HubServer, tmp_path: Path) -> None:
    bundle, run_id = make_card_bundle(tmp_path / "b", adapter=False)
    with pytest.raises(MissingAdapterError, match="adapter/adapter_model.safetensors"):
        push_run(bundle, REPO_ID, run_id=run_id)
    assert hub.requests == []


def test_card_metadata_failing_local_validation_is_refused_before_any_request(hub: HubServer, tmp_path: Path) -> None:
    bundle, run_id = make_card_bundle(tmp_path / "b", model_id="./models/llama")
    with pytest.raises(CardMetadataError, match="base_model"):
        push_run(bundle, REPO_ID, run_id=run_id)
    assert hub.requests == []


def test_card_metadata_the_hub_refuses_is_refused_before_any_upload(hub: HubServer, tmp_path: Path) -> None:
    bundle, run_id = make_card_bundle(tmp_path / "b", license="my-own-license")
    with pytest.raises(CardMetadataError, match="license"):
        push_run(bundle, REPO_ID, run_id=run_id)
    assert hub.calls("validate_yaml") == 1
    assert uploads(hub) == []


def test_a_missing_token_is_refused_before_any_request(
    hub: HubServer, run_bundle: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle, run_id = run_bundle
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubAuthError, match="no Hub token"):
        push_run(bundle, REPO_ID, run_id=run_id)
    assert hub.requests == []


def test_cli_push_prints_the_commit_url(hub: HubServer, run_bundle: tuple[Path, str]) -> None:
    bundle, run_id = run_bundle
    result = run_cli("push", str(bundle), "--repo", REPO_ID, "--run", run_id[:12], "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["commit"] == hub.head(REPO_ID).oid
    assert record["commit_url"].endswith(f"/{REPO_ID}/commit/{record['commit']}")


def test_cli_push_with_a_rejected_token_exits_2_with_a_clear_message(
    hub: HubServer, run_bundle: tuple[Path, str]
) -> None:
    bundle, run_id = run_bundle
    wrong = "hf_" + "W" * 34
    result = run_cli("push", str(bundle), "--repo", REPO_ID, env={"HF_TOKEN": wrong})
    assert result.returncode == 2
    assert "refused the token (HTTP 401)" in result.stderr
    assert "hint: set HF_TOKEN" in result.stderr
    assert wrong not in result.stderr + result.stdout
    assert uploads(hub) == []
    assert not (bundle / "data" / "runs" / run_id / "publish.json").exists()


def test_cli_push_with_an_invalid_repo_exits_2(hub: HubServer, run_bundle: tuple[Path, str]) -> None:
    bundle, _ = run_bundle
    result = run_cli("push", str(bundle), "--repo", "not a repo")
    assert result.returncode == 2
    assert "not a valid Hub repo ID" in result.stderr
    assert hub.requests == []


def test_local_hub_serves_what_locking_a_hub_base_model_needs(hub: HubServer, tmp_path: Path) -> None:
    """Issue 9 part 4 runs against this server: revision -> commit sha, LFS sha256 from metadata."""
    import hashlib

    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url, snapshot_download

    weights, config = b"\0safetensors weights" * 100, b'{"model_type": "llama"}\n'
    commit = hub.commit_files("TinyOrg/tiny-llama", {"model.safetensors": weights, "config.json": config})
    info = HfApi(endpoint=hub.endpoint).model_info("TinyOrg/tiny-llama", revision="main", files_metadata=True)
    assert info.sha == commit
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert siblings["model.safetensors"].lfs is not None
    assert siblings["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert siblings["config.json"].lfs is None and siblings["config.json"].size == len(config)
    meta = get_hf_file_metadata(
        hf_hub_url("TinyOrg/tiny-llama", "model.safetensors", revision="main", endpoint=hub.endpoint)
    )
    assert meta.commit_hash == commit and meta.etag == hashlib.sha256(weights).hexdigest()
    snapshot = Path(
        snapshot_download(
            "TinyOrg/tiny-llama",
            revision=commit,
            endpoint=hub.endpoint,
            cache_dir=tmp_path / "cache",
        )
    )
    assert (snapshot / "model.safetensors").read_bytes() == weights
    assert (snapshot / "config.json").read_bytes() == config


def test_an_adapter_config_naming_a_local_base_model_path_is_refused(hub: HubServer, tmp_path: Path) -> None:
    bundle, run_id = make_card_bundle(tmp_path / "b")
    config_path = bundle / "data" / "runs" / run_id / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "/mnt/model"
    fmt.record_run_file(bundle, run_id, "adapter/adapter_config.json", json.dumps(config).encode())
    with pytest.raises(InputError, match="local path"):
        push_run(bundle, REPO_ID, run_id=run_id)
    assert hub.requests == []


def test_an_unreachable_hub_is_a_clear_error_and_no_publish_record(
    hub: HubServer, run_bundle: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    bundle, run_id = run_bundle
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed}")
    with pytest.raises(HubUnavailableError, match="ConnectError"):
        push_run(bundle, REPO_ID, run_id=run_id)
    assert not (bundle / "data" / "runs" / run_id / "publish.json").exists()
