"""Base models and datasets read from the Hub: pinned by `bundler lock`, checked on download, against a local Hub."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundler import hub as hubio
from bundler.bundle.hashing import sha256_bytes
from bundler.errors import (
    ConfigError,
    DatasetError,
    HubFileMismatchError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
    InputError,
    ModelLockStaleError,
)
from bundler.recipe import models
from bundler.recipe.config import BundleConfig
from bundler.recipe.configfile import load_config
from bundler.recipe.datasource import describe_dataset, find_dataset_files, load_records
from bundler.recipe.splits import make_split_manifest
from tests.conftest import QUICKSTART, REPO, git, make_git_project, run_cli
from tests.fixtures.hub_server import HubServer, _Handler

MODEL_ID = "org/tiny-llama"
DATASET_ID = "org/reviews"
REVIEWS = (QUICKSTART / "data" / "reviews.jsonl").read_bytes()


class _DatasetHandler(_Handler):
    """The fixture's handler, also answering the dataset routes (the same repos, under /datasets/)."""

    def _dispatch(self) -> None:
        # huggingface_hub asks for a dataset at /api/datasets/<repo>/... and /datasets/<repo>/resolve/...;
        # the fixture keeps one namespace of repos, so a dataset is served as a repo of that name.
        self.path = re.sub(r"^/api/datasets/", "/api/models/", self.path)
        self.path = re.sub(r"^/datasets/", "/", self.path)
        super()._dispatch()

    do_GET = do_POST = do_PUT = do_HEAD = _dispatch


class LocalHub(HubServer):
    def __enter__(self) -> LocalHub:
        from http.server import ThreadingHTTPServer
        from threading import Thread

        handler = type("Handler", (_DatasetHandler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def tamper(self, repo_id: str, path: str) -> None:
        """Change a stored file's bytes (same size) without a commit: what a compromised server would do."""
        blob = self.blob_dir / self.head(repo_id).files[path].sha256
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A running local Hub, reached the way a user reaches the real one: HF_ENDPOINT and HF_TOKEN."""
    import huggingface_hub.constants

    with LocalHub(tmp_path / "hub-storage") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_TOKEN", server.token)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token-here"))
        monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "bundler-cache"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-here"))
        yield server


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The quickstart's tiny model files, made by `python -m runtime.tiny` with only the runtime on the path."""
    work = tmp_path_factory.mktemp("tiny")
    shutil.copytree(
        REPO / "bundler" / "runtime", work / "path" / "runtime", ignore=shutil.ignore_patterns("__pycache__")
    )
    tiny = load_config(QUICKSTART).model.tiny.model_dump()
    subprocess.run(
        [sys.executable, "-m", "runtime.tiny", str(work / "model"), json.dumps(tiny)],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(work / "path"), "PYTHONHASHSEED": "0"},
    )
    return {p.name: p.read_bytes() for p in sorted((work / "model").iterdir()) if p.is_file()}


def seed_model(hub: LocalHub, tiny_model: dict[str, bytes], private: bool = False) -> str:
    """Put the tiny model on the Hub, with files a load never reads beside it; return the commit."""
    if private:
        hub.create_repo(MODEL_ID, private=True)
    extra = {"README.md": b"# tiny\n", "onnx/model.onnx": b"\0onnx weights\0"}
    return hub.commit_files(MODEL_ID, {**tiny_model, **extra})


def hub_project(tmp_path: Path, revision: str = "main") -> Path:
    """The quickstart as a git project whose [model] comes from the Hub."""
    source = tmp_path / "source"
    shutil.copytree(QUICKSTART, source, ignore=shutil.ignore_patterns("__pycache__", "out"))
    toml = (source / "bundle.toml").read_text()
    toml = (
        toml.replace('source = "tiny"', 'source = "hub"')
        .replace('id = "bundler-examples/tiny-llama"', f'id = "{MODEL_ID}"')
        .replace('revision = "seed-0"', f'revision = "{revision}"')
    )
    (source / "bundle.toml").write_text(toml)
    return make_git_project(source, tmp_path / "project")


def lock_model(project: Path) -> dict:
    """What `bundler lock` does for the model, then commit the lock as a user would."""
    _, record = models.write_model_lock(project, load_config(project))
    git(project, "add", models.MODEL_LOCK)
    git(project, "commit", "-q", "-m", "lock the base model")
    return record


# ---------------------------------------------------------------- base model


def test_lock_pins_the_commit_and_sha256_of_every_file_a_load_reads(
    hub: LocalHub, tiny_model: dict[str, bytes], tmp_path: Path
) -> None:
    commit = seed_model(hub, tiny_model)
    project = hub_project(tmp_path)
    record = lock_model(project)
    assert record["commit"] == commit
    assert record["revision"] == "main" and record["id"] == MODEL_ID and record["source"] == "hub"
    # README, .gitattributes and onnx/ are never loaded; config.json (a regular file) was hashed from a download.
    assert record["files"] == {name: sha256_bytes(data) for name, data in tiny_model.items()}
    written = json.loads((project / "model.lock.json").read_text())
    assert written == record and written["schema"] == "bundler.model/1"


def test_lock_takes_lfs_hashes_from_metadata_without_downloading_weights(
    hub: LocalHub, tiny_model: dict[str, bytes], tmp_path: Path
) -> None:
    seed_model(hub, tiny_model)
    lock_model(hub_project(tmp_path))
    downloaded = [path for name, path in hub.requests if name == "resolve"]
    assert downloaded and all(not p.endswith(".safetensors") for p in downloaded)


def test_build_copies_the_model_lock_into_the_recipe_and_caches_the_checked_snapshot(
    hub: LocalHub, tiny_model: dict[str, bytes], tmp_path: Path
) -> None:
    seed_model(hub, tiny_model)
    project = hub_project(tmp_path)
    record = lock_model(project)
    result = run_cli("build", str(project), "--out", str(tmp_path / "bundle"), "--no-run", "--json")
    assert result.returncode == 0, result.stderr
    recipe_model = tmp_path / "bundle" / "data" / "recipe" / "model.json"
    assert recipe_model.read_text() == (project / "model.lock.json").read_text()
    cached = Path(os.environ["BUNDLER_CACHE"]) / "hub" / "models" / "org--tiny-llama" / record["commit"]
    assert sorted(p.name for p in cached.iterdir()) == sorted(tiny_model)
    assert all((cached / name).read_bytes() == data for name, data in tiny_model.items())


def test_build_refuses_a_model_lock_for_another_revision(
    hub: LocalHub, tiny_model: dict[str, bytes], tmp_path: Path
) -> None:
    seed_model(hub, tiny_model)
    project = hub_project(tmp_path)
    lock_model(project)
    toml = project / "bundle.toml"
    toml.write_text(toml.read_text().replace('revision = "main"', 'revision = "v2"'))
    git(project, "commit", "-q", "-am", "move to v2")
    result = run_cli("build", str(project), "--out", str(tmp_path / "bundle"), "--no-run")
    assert result.returncode == 1, result.stderr
    assert "stale" in result.stderr and "'v2'" in result.stderr and "bundler lock" in result.stderr
    assert not (tmp_path / "bundle").exists()
    with pytest.raises(ModelLockStaleError):
        models.read_model_lock(project, load_config(project))


def test_a_file_changed_on_the_server_fails_the_build_naming_it(
    hub: LocalHub, tiny_model: dict[str, bytes], tmp_path: Path
) -> None:
    seed_model(hub, tiny_model)
    project = hub_project(tmp_path)
    record = lock_model(project)
    hub.tamper(MODEL_ID, "model.safetensors")
    result = run_cli("build", str(project), "--out", str(tmp_path / "bundle"), "--no-run")
    assert result.returncode == 2, result.stderr
    assert "model.safetensors" in result.stderr and "do not match" in result.stderr
    assert "config.json" not in result.stderr.split("hint:")[0]
    assert not (tmp_path / "bundle").exists()
    snapshots = Path(os.environ["BUNDLER_CACHE"]) / "hub" / "models" / "org--tiny-llama"
    assert not (snapshots / record["commit"]).exists()
    assert [p.name for p in snapshots.iterdir()] == []  # no partial download left behind


def test_a_damaged_cache_is_fetched_again_not_trusted(
    hub: LocalHub, tiny_model: dict[str, bytes], tmp_path: Path
) -> None:
    seed_model(hub, tiny_model)
    record = lock_model(hub_project(tmp_path))
    directory = models.hub_snapshot(record)
    (directory / "model.safetensors").write_bytes(b"not the weights")
    again = models.hub_snapshot(record)
    assert (again / "model.safetensors").read_bytes() == tiny_model["model.safetensors"]


def test_a_cached_snapshot_is_used_without_asking_the_hub(
    hub: LocalHub, tiny_model: dict[str, bytes], tmp_path: Path
) -> None:
    seed_model(hub, tiny_model)
    record = lock_model(hub_project(tmp_path))
    first = models.hub_snapshot(record)
    asked = len(hub.requests)
    assert models.hub_snapshot(record) == first
    assert len(hub.requests) == asked


def test_lock_of_an_unknown_repo_exits_2_before_resolving_dependencies(hub: LocalHub, tmp_path: Path) -> None:
    project = hub_project(tmp_path)
    result = run_cli("lock", str(project))
    assert result.returncode == 2, result.stderr
    assert f"no model repo '{MODEL_ID}'" in result.stderr
    assert not (project / "model.lock.json").exists()


def test_lock_of_an_unknown_revision_exits_2(hub: LocalHub, tiny_model: dict[str, bytes], tmp_path: Path) -> None:
    seed_model(hub, tiny_model)
    project = hub_project(tmp_path, revision="no-such-branch")
    result = run_cli("lock", str(project))
    assert result.returncode == 2, result.stderr
    assert "no revision 'no-such-branch'" in result.stderr and "hint:" in result.stderr
    with pytest.raises(HubRevisionNotFoundError):
        models.lock_hub_model(load_config(project))


def test_a_private_repo_without_a_token_says_to_set_one(
    hub: LocalHub, tiny_model: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_model(hub, tiny_model, private=True)
    project = hub_project(tmp_path)
    monkeypatch.delenv("HF_TOKEN")
    result = run_cli("lock", str(project))
    assert result.returncode == 2, result.stderr
    assert "private and no token was given" in result.stderr and "HF_TOKEN" in result.stderr
    with pytest.raises(HubRepoNotFoundError) as caught:
        models.lock_hub_model(load_config(project))
    assert caught.value.has_token is False


def test_a_private_repo_locks_with_the_token(hub: LocalHub, tiny_model: dict[str, bytes], tmp_path: Path) -> None:
    commit = seed_model(hub, tiny_model, private=True)
    assert lock_model(hub_project(tmp_path))["commit"] == commit
    assert all(h.get("authorization") == f"Bearer {hub.token}" for h in hub.headers_seen)


def test_lock_check_reports_the_pinned_commit(hub: LocalHub, tiny_model: dict[str, bytes], tmp_path: Path) -> None:
    commit = seed_model(hub, tiny_model)
    project = hub_project(tmp_path)
    lock_model(project)
    result = run_cli("lock", str(project), "--check", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model_commit"] == commit


def test_offline_lock_keeps_a_matching_model_lock_without_asking_the_hub(
    hub: LocalHub, tiny_model: dict[str, bytes], tmp_path: Path
) -> None:
    seed_model(hub, tiny_model)
    project = hub_project(tmp_path)
    record = lock_model(project)
    asked = len(hub.requests)
    assert models.write_model_lock(project, load_config(project), offline=True)[1] == record
    assert len(hub.requests) == asked
    (project / "model.lock.json").unlink()
    with pytest.raises(InputError, match="needs .*model.lock.json"):
        models.write_model_lock(project, load_config(project), offline=True)


def test_model_files_chosen_are_top_level_configs_tokenizer_and_one_weight_format() -> None:
    paths = [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "tokenizer.json",
        "tokenizer.model",
        "README.md",
        ".gitattributes",
        "onnx/model.onnx",
        "original/consolidated.00.pth",
        "tf_model.h5",
        "merges.txt",
    ]
    assert models.select_model_files(paths) == [
        "config.json",
        "merges.txt",
        "model-00001-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer.model",
    ]
    assert models.select_model_files(["config.json", "pytorch_model.bin"]) == ["config.json", "pytorch_model.bin"]


# ---------------------------------------------------------------- datasets


def data_config(path: str, revision: str | None = None, **data: object) -> BundleConfig:
    return BundleConfig.model_validate(
        {
            "project": {"name": "demo", "seed": 1234},
            "model": {"id": "org/model"},
            "data": {"path": path, **({"revision": revision} if revision else {}), "label_field": "label", **data},
        }
    ).resolved()


def seed_dataset(hub: LocalHub) -> str:
    files = {"data/reviews.jsonl": REVIEWS, "README.md": b"---\nlicense: mit\n---\n", "notes/readme.txt": b"x"}
    return hub.commit_files(DATASET_ID, files)


def test_a_hub_dataset_loads_at_the_pinned_commit_and_dataset_json_records_it(hub: LocalHub, tmp_path: Path) -> None:
    commit = seed_dataset(hub)
    hub.commit_files(DATASET_ID, {"data/reviews.jsonl": b'{"id": "new"}\n'})  # main moves on
    config = data_config(f"hf://datasets/{DATASET_ID}", revision=commit)
    description = describe_dataset(config, tmp_path)
    assert description == {
        "schema": "bundler.dataset/1",
        "format": "jsonl",
        "source": f"hf://datasets/{DATASET_ID}",
        "hub_id": DATASET_ID,
        "revision": commit,
        "files": {"data/reviews.jsonl": sha256_bytes(REVIEWS)},
    }
    records = load_records(config, tmp_path).records
    assert records == [json.loads(line) for line in REVIEWS.decode().splitlines() if line.strip()]


def test_a_branch_revision_is_recorded_as_the_commit_it_named(hub: LocalHub, tmp_path: Path) -> None:
    commit = seed_dataset(hub)
    found = find_dataset_files(data_config(f"hf://datasets/{DATASET_ID}"), tmp_path)
    assert found.revision == commit and found.hub_id == DATASET_ID
    assert (found.data_dir / "data" / "reviews.jsonl").read_bytes() == REVIEWS


def test_a_hub_dataset_splits_exactly_like_the_same_file_on_disk(hub: LocalHub, tmp_path: Path) -> None:
    commit = seed_dataset(hub)
    (tmp_path / "reviews.jsonl").write_bytes(REVIEWS)
    from_hub = make_split_manifest(data_config(f"hf://datasets/{DATASET_ID}@{commit}/data/reviews.jsonl"), tmp_path)
    local = make_split_manifest(data_config("reviews.jsonl"), tmp_path)
    assert from_hub["splits"] == local["splits"] and from_hub["splits"]["train"]["count"] > 0
    assert from_hub["dataset"]["files"] == {"data/reviews.jsonl": sha256_bytes(REVIEWS)}


def test_bundler_split_reads_a_hub_dataset(hub: LocalHub, tmp_path: Path) -> None:
    commit = seed_dataset(hub)
    project = tmp_path / "p"
    project.mkdir()
    (project / "bundle.toml").write_text(
        '[project]\nname = "p"\n[model]\nid = "org/m"\n'
        f'[data]\npath = "hf://datasets/{DATASET_ID}/data"\nrevision = "{commit}"\nlabel_field = "label"\n'
    )
    result = run_cli("split", str(project), "--json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((project / "splits.json").read_text())
    assert manifest["dataset"]["source"] == f"hf://datasets/{DATASET_ID}"
    assert sum(json.loads(result.stdout)["counts"].values()) == manifest["totals"]["examples"] > 0


def test_parquet_on_the_hub_is_checked_against_its_lfs_sha256(hub: LocalHub, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in REVIEWS.decode().splitlines()[:40]]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    data = (tmp_path / "train.parquet").read_bytes()
    commit = hub.commit_files(DATASET_ID, {"train.parquet": data})
    assert hub.head(DATASET_ID).files["train.parquet"].lfs
    config = data_config(f"hf://datasets/{DATASET_ID}/*.parquet", revision=commit)
    assert describe_dataset(config, tmp_path)["files"] == {"train.parquet": sha256_bytes(data)}
    assert len(load_records(config, tmp_path).records) == 40


@pytest.mark.parametrize("path", ["data/reviews.jsonl", "train.parquet"])
def test_a_dataset_file_changed_on_the_server_is_refused(hub: LocalHub, tmp_path: Path, path: str) -> None:
    hub.commit_files(DATASET_ID, {"data/reviews.jsonl": REVIEWS, "train.parquet": b"PAR1" + b"\0" * 64 + b"PAR1"})
    hub.tamper(DATASET_ID, path)
    with pytest.raises(HubFileMismatchError) as caught:
        find_dataset_files(data_config(f"hf://datasets/{DATASET_ID}/{path}"), tmp_path)
    assert [m[0] for m in caught.value.mismatches] == [path]
    assert caught.value.exit_code == 2


def test_an_unknown_dataset_or_revision_exits_2(hub: LocalHub, tmp_path: Path) -> None:
    seed_dataset(hub)
    project = tmp_path / "p"
    project.mkdir()
    for path, revision, said in [
        ("hf://datasets/org/nothing", "main", "no dataset repo 'org/nothing'"),
        (f"hf://datasets/{DATASET_ID}", "v9", "no revision 'v9'"),
    ]:
        (project / "bundle.toml").write_text(
            f'[project]\nname = "p"\n[model]\nid = "org/m"\n[data]\npath = "{path}"\nrevision = "{revision}"\n'
        )
        result = run_cli("split", str(project))
        assert result.returncode == 2, result.stderr
        assert said in result.stderr and "hint:" in result.stderr


def test_a_private_dataset_without_a_token_says_to_set_one(
    hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.create_repo(DATASET_ID, private=True)
    seed_dataset(hub)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubRepoNotFoundError) as caught:
        find_dataset_files(data_config(f"hf://datasets/{DATASET_ID}"), tmp_path)
    assert "private and no token" in str(caught.value) and "HF_TOKEN" in caught.value.hint


def test_a_folder_with_no_data_files_is_a_dataset_error(hub: LocalHub, tmp_path: Path) -> None:
    seed_dataset(hub)
    with pytest.raises(DatasetError, match="no JSONL, CSV or Parquet files"):
        find_dataset_files(data_config(f"hf://datasets/{DATASET_ID}/notes"), tmp_path)


def test_two_different_revisions_for_one_dataset_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="pins revision 'v1' but data.revision says 'v2'") as caught:
        find_dataset_files(data_config(f"hf://datasets/{DATASET_ID}@v1", revision="v2"), tmp_path)
    assert "give the revision once" in caught.value.hint


def test_a_revision_for_a_local_dataset_is_a_config_error() -> None:
    from bundler.recipe.configfile import parse_config

    with pytest.raises(ConfigError, match="revision applies to Hub datasets only"):
        parse_config('[project]\nname = "p"\n[model]\nid = "org/m"\n[data]\npath = "d.jsonl"\nrevision = "v1"\n')


def test_snapshot_cache_lives_under_bundler_cache(hub: LocalHub) -> None:
    where = hubio.snapshot_dir(DATASET_ID, "dataset", "a" * 40)
    assert where == Path(os.environ["BUNDLER_CACHE"]) / "hub" / "datasets" / "org--reviews" / ("a" * 40)


# ---------------------------------------------------------------- through the pipeline


# pipeline.py routes these: locate_inputs -> models.hub_snapshot for model.json source "hub",
# data_dir_of -> datasource.dataset_dir.
def test_running_a_built_bundle_finds_the_cached_hub_snapshot(
    hub: LocalHub, tiny_model: dict[str, bytes], tmp_path: Path
) -> None:
    from bundler.runners.execute import locate_inputs

    seed_model(hub, tiny_model)
    project = hub_project(tmp_path)
    record = lock_model(project)
    result = run_cli("build", str(project), "--out", str(tmp_path / "bundle"), "--no-run")
    assert result.returncode == 0, result.stderr
    model_dir, _ = locate_inputs(tmp_path / "bundle", None, None, "venv")
    assert model_dir == hubio.snapshot_dir(MODEL_ID, "model", record["commit"])


def test_a_build_vendors_a_hub_dataset_and_records_its_commit(
    hub: LocalHub, tiny_model: dict[str, bytes], tmp_path: Path
) -> None:
    seed_model(hub, tiny_model)
    commit = seed_dataset(hub)
    project = hub_project(tmp_path)
    toml = project / "bundle.toml"
    toml.write_text(
        toml.read_text().replace(
            'path = "data/reviews.jsonl"', f'path = "hf://datasets/{DATASET_ID}/data"\nrevision = "{commit}"'
        )
    )
    git(project, "commit", "-q", "-am", "data from the Hub")
    lock_model(project)
    result = run_cli("build", str(project), "--out", str(tmp_path / "bundle"), "--no-run")
    assert result.returncode == 0, result.stderr
    data = tmp_path / "bundle" / "data"
    recorded = json.loads((data / "recipe" / "dataset.json").read_text())
    assert recorded["hub_id"] == DATASET_ID and recorded["revision"] == commit
    assert (data / "vendor" / "dataset" / "data" / "reviews.jsonl").read_bytes() == REVIEWS


@pytest.mark.slow
def test_a_hub_base_model_trains_end_to_end(
    hub: LocalHub, tiny_model: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default cache: the locked venv is reused from earlier builds (a cold one adds about 45 s).
    monkeypatch.delenv("BUNDLER_CACHE")
    seed_model(hub, tiny_model)
    project = hub_project(tmp_path)
    record = lock_model(project)
    result = run_cli("build", str(project), "--out", str(tmp_path / "bundle"), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = json.loads(result.stdout)["run_id"]
    run = tmp_path / "bundle" / "data" / "runs" / run_id
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    recipe_model = json.loads((tmp_path / "bundle" / "data" / "recipe" / "model.json").read_text())
    assert recipe_model["commit"] == record["commit"] and recipe_model["files"] == record["files"]


@pytest.mark.parametrize("name", ["/etc/passwd.jsonl", "../outside.jsonl", "a//b.jsonl", "a\\..\\b.jsonl"])
def test_file_names_that_leave_the_snapshot_are_never_downloaded(hub: LocalHub, tmp_path: Path, name: str) -> None:
    pinned = hubio.HubRevision(DATASET_ID, "dataset", "main", "c" * 40, {name: hubio.HubFile(name, 1, "x", None)})
    with pytest.raises(InputError, match="unsafe file names"):
        hubio.fetch_files(pinned, [name])
    assert hub.calls("resolve") == 0
