"""Trackers: metrics.jsonl's lines also go to MLflow (a real local file store) or W&B, when configured."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import tomli_w
import tomllib

from bundler.errors import ConfigError
from bundler.recipe.configfile import parse_config
from bundler.runners.host import host_invocation
from bundler.runners.launch import RunRequest
from bundler.runtime.tracking import metric_items
from tests.fixtures.runtime_recipe import error_event, make_recipe

MINIMAL = """
[project]
name = "demo"
[model]
id = "org/base"
[data]
path = "data.jsonl"
"""


def _with_tracking(recipe: Path, tracking: dict) -> None:
    """Set [tracking] in the recipe's resolved config.toml (as `bundler build` writes it)."""
    config = tomllib.loads((recipe / "config.toml").read_text(encoding="utf-8"))
    config["tracking"] = {**config.get("tracking", {}), **tracking}
    (recipe / "config.toml").write_text(tomli_w.dumps(config), encoding="utf-8")


def _host_run(
    bundle: Path, paths: dict[str, Path], out: Path, tracking: dict | None = None
) -> subprocess.CompletedProcess:
    """The runtime started exactly as the host runner starts it (command and environment)."""
    request = RunRequest(bundle=bundle, model_dir=paths["model"], data_dir=paths["data"], tracking=tracking)
    command, env = host_invocation(request, out)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def untracked(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    """The quickstart recipe trained once with tracking off (the default)."""
    bundle = tmp_path_factory.mktemp("untracked") / "bundle"
    paths = make_recipe(bundle / "data", model_dir=model_dir)
    result = _host_run(bundle, paths, bundle.parent / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    return bundle.parent / "out"


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> tuple[Path, Path]:
    """The same recipe trained with [tracking] backend = "mlflow" into a local file store."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    bundle, store = root / "bundle", root / "mlruns"
    paths = make_recipe(bundle / "data", model_dir=model_dir)
    tracking = {"backend": "mlflow", "project": "quickstart-exp", "run_name": "seed0", "tracking_uri": str(store)}
    result = _host_run(bundle, paths, root / "out", tracking=tracking)
    assert result.returncode == 0, result.stdout + result.stderr
    return root / "out", store


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _only_run(store: Path):
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3.x refuses file stores without it
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("quickstart-exp")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


@pytest.mark.slow
def test_mlflow_metric_histories_equal_metrics_jsonl(mlflow_run: tuple[Path, Path]) -> None:
    out, store = mlflow_run
    client, run = _only_run(store)
    expected: dict[str, list[tuple[int, float]]] = {}
    for line in _lines(out):
        for key, value in metric_items(line).items():
            expected.setdefault(key, []).append((line["step"], value))
    assert {"loss", "grad_norm", "lr", "tokens", "step_time", "val/eval_loss"} <= set(expected)
    for key, history in expected.items():
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert logged == history, key


@pytest.mark.slow
def test_mlflow_run_holds_final_eval_adapter_hash_and_config(mlflow_run: tuple[Path, Path]) -> None:
    out, store = mlflow_run
    _client, run = _only_run(store)
    results = json.loads((out / "results.json").read_text())
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "seed0"
    assert run.data.tags["bundler.adapter_sha256"] == results["adapter_sha256"]
    assert run.data.metrics["final/test_loss"] == results["eval"]["test_loss"]
    assert run.data.params["lora.r"] == "8"
    assert run.data.params["train.max_steps"] == "30"


@pytest.mark.slow
def test_tracking_changes_no_adapter_byte_and_adds_no_run_file(untracked: Path, mlflow_run: tuple[Path, Path]) -> None:
    tracked, _store = mlflow_run
    adapter = "adapter/adapter_model.safetensors"
    assert (tracked / adapter).read_bytes() == (untracked / adapter).read_bytes()
    files = sorted(p.relative_to(untracked).as_posix() for p in untracked.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tracked).as_posix() for p in tracked.rglob("*") if p.is_file())


@pytest.mark.slow
def test_tracking_writes_no_token_into_the_run(tmp_path: Path, model_dir: Path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    token = "sk-" + "Q" * 40  # the shape of a W&B/OpenAI-style key
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    bundle = tmp_path / "bundle"
    paths = make_recipe(bundle / "data", model_dir=model_dir, config_overrides={"train": {"max_steps": 2}})
    _with_tracking(paths["recipe"], {"backend": "mlflow", "tracking_uri": str(tmp_path / "mlruns")})
    result = _host_run(bundle, paths, tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    written = [p for root in (tmp_path / "out", tmp_path / "mlruns") for p in root.rglob("*") if p.is_file()]
    assert written and not [p for p in written if token.encode() in p.read_bytes()]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_configured_tracker_without_its_library_stops_before_training(tmp_path: Path, model_dir: Path) -> None:
    bundle = tmp_path / "bundle"
    paths = make_recipe(bundle / "data", model_dir=model_dir)
    _with_tracking(paths["recipe"], {"backend": "wandb", "project": "p"})
    result = _host_run(bundle, paths, tmp_path / "out")
    assert result.returncode == 3, result.stdout + result.stderr
    error = error_event(result)
    assert "wandb is not installed" in error["message"]
    assert "requirements.in" in error["hint"]
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_mlflow_without_a_store_is_refused_before_training(tmp_path: Path, model_dir: Path) -> None:
    pytest.importorskip("mlflow")
    bundle = tmp_path / "bundle"
    paths = make_recipe(bundle / "data", model_dir=model_dir)
    _with_tracking(paths["recipe"], {"backend": "mlflow"})
    result = _host_run(bundle, paths, tmp_path / "out")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "tracking_uri" in error_event(result)["hint"]
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
@pytest.mark.slow
def test_wandb_runs_offline_into_the_configured_directory(tmp_path: Path, model_dir: Path) -> None:
    bundle = tmp_path / "bundle"
    paths = make_recipe(bundle / "data", model_dir=model_dir, config_overrides={"train": {"max_steps": 3}})
    _with_tracking(paths["recipe"], {"backend": "wandb", "project": "p", "tracking_uri": str(tmp_path / "wb")})
    result = _host_run(bundle, paths, tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    assert list((tmp_path / "wb").rglob("offline-run-*/run-*.wandb"))


def test_tracking_is_off_by_default() -> None:
    assert parse_config(MINIMAL).tracking.backend == "none"


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("http://mlflow.example.org", "local path or a file: URI"),
        ("mlruns", "absolute or start with ~/"),
        ("sqlite:///mlflow.db", "absolute or start with ~/"),
        ("https://user:pass@mlflow.example.org", "secret"),
    ],
)
def test_tracking_uri_must_be_a_local_store_without_credentials(uri: str, problem: str) -> None:
    text = MINIMAL + f'[tracking]\nbackend = "mlflow"\ntracking_uri = "{uri}"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert any(p.location == "tracking.tracking_uri" and problem in p.message for p in caught.value.problems)


def test_unknown_tracking_backend_is_a_configerror_event() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL + '[tracking]\nbackend = "tensorboard"\n')
    assert [p.location for p in caught.value.problems] == ["tracking.backend"]


def test_eval_lines_become_split_prefixed_metrics() -> None:
    assert metric_items({"step": 10, "split": "val", "eval_loss": 1.5}) == {"val/eval_loss": 1.5}
    assert metric_items({"step": 1, "loss": 2.0, "tokens": 64}) == {"loss": 2.0, "tokens": 64.0}
