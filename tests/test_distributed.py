"""Data-parallel runs: the runtime re-launched by `accelerate launch` with 2 CPU processes (gloo).

Real processes, the quickstart-size tiny model, 6 steps. Measured on the 2-core dev machine: a
2-process run takes about 20 s (two interpreters importing torch), so the training tests are slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bundler.audit.runcompare import fingerprint, fingerprint_differences
from bundler.runners.launch import RunRequest, runtime_env
from tests.fixtures.recorded_runs import compare, env_record, make_bundle, record
from tests.fixtures.runtime_recipe import make_recipe, run_runtime

STEPS = 6
TRAIN = {"max_steps": STEPS, "eval_every": 3, "batch_size": 8}


def _train(root: Path, model_dir: Path, processes: int, *, dropout: float = 0.05, **train: object) -> Path:
    paths = make_recipe(
        root,
        config_overrides={"train": {**TRAIN, **train}, "lora": {"dropout": dropout}},
        model_dir=model_dir,
    )
    out = root / "out"
    result = run_runtime(paths, out, BUNDLER_NUM_PROCESSES=str(processes))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    (root / "stdout.txt").write_text(result.stdout)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Path]:
    """Two 2-process runs and a 1-process run (LoRA dropout 0.05); a 1- and a 2-process run without dropout."""
    root = tmp_path_factory.mktemp("distributed")
    return {
        "two_a": _train(root / "two_a", model_dir, 2),
        "two_b": _train(root / "two_b", model_dir, 2),
        "one": _train(root / "one", model_dir, 1),
        "one_nodrop": _train(root / "one_nodrop", model_dir, 1, dropout=0.0),
        "two_nodrop": _train(root / "two_nodrop", model_dir, 2, dropout=0.0),
    }


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _curve(out: Path) -> list[dict]:
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "step_time"} for line in lines]


def _losses(out: Path) -> list[float]:
    return [m["loss"] for m in _curve(out) if "loss" in m]


@pytest.mark.slow
def test_two_two_process_runs_give_identical_adapters_and_loss_curves(runs: dict[str, Path]) -> None:
    a, b = runs["two_a"], runs["two_b"]
    for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert _curve(a) == _curve(b) and len(_losses(a)) == STEPS
    ra, rb = _json(a / "results.json"), _json(b / "results.json")
    assert ra["adapter_tensor_sha256"] == rb["adapter_tensor_sha256"]
    assert ra["eval"] == rb["eval"]


@pytest.mark.slow
def test_one_and_two_processes_agree_to_rounding_without_dropout(runs: dict[str, Path]) -> None:
    """Same global batches, loss over the global token count, gradients summed: only the summation order differs."""
    one, two = _curve(runs["one_nodrop"]), _curve(runs["two_nodrop"])
    assert [m["step"] for m in one] == [m["step"] for m in two]
    for a, b in zip(one, two, strict=True):
        for field in ("loss", "grad_norm", "eval_loss"):
            if field in a:
                assert b[field] == pytest.approx(a[field], rel=1e-5), (field, a, b)
        if "tokens" in a:
            assert a["tokens"] == b["tokens"]  # the whole global batch is counted, not one rank's share


@pytest.mark.slow
def test_one_and_two_processes_with_dropout_are_close_but_not_identical(runs: dict[str, Path]) -> None:
    """Rank r draws dropout masks from seed + r, so the masks (not only the sum order) differ from one process."""
    one, two = _losses(runs["one"]), _losses(runs["two_a"])
    assert one[0] == two[0]  # LoRA B starts at zero: dropout cannot act before the first update
    assert two == pytest.approx(one, rel=1e-3)
    r1, r2 = _json(runs["one"] / "results.json"), _json(runs["two_a"] / "results.json")
    assert r1["adapter_tensor_sha256"] != r2["adapter_tensor_sha256"]


@pytest.mark.slow
def test_env_and_results_record_world_size_batch_layout_and_rank_seeds(runs: dict[str, Path]) -> None:
    env, results = _json(runs["two_a"] / "env.json"), _json(runs["two_a"] / "results.json")
    layout = env["distributed"]
    assert layout["world_size"] == 2 and layout["backend"] == "gloo"
    assert layout["per_device_batch_size"] == 4 and layout["global_batch_size"] == 8 and layout["grad_accum"] == 1
    assert layout["env"]["NCCL_NVLS_ENABLE"] == "0"
    assert env["determinism"]["dropout_seed"]["value"] == [0, 1]  # train.seed 0 + rank
    assert (results["world_size"], results["per_device_batch_size"], results["grad_accum"]) == (2, 4, 1)
    single = _json(runs["one"] / "env.json")
    assert single["distributed"]["world_size"] == 1 and "dropout_seed" not in single["determinism"]


@pytest.mark.slow
def test_only_rank_zero_prints_events(runs: dict[str, Path]) -> None:
    events = [
        json.loads(line.removeprefix("BUNDLER_EVENT "))
        for line in (runs["two_a"].parent / "stdout.txt").read_text().splitlines()
        if line.startswith("BUNDLER_EVENT ")
    ]
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, STEPS + 1))
    assert sum(e["event"] == "done" for e in events) == 1


@pytest.mark.slow
def test_replay_fingerprints_of_real_runs_differ_in_world_size(runs: dict[str, Path]) -> None:
    one, two = fingerprint(_json(runs["one"] / "env.json")), fingerprint(_json(runs["two_a"] / "env.json"))
    changed = {d["field"]: d for d in fingerprint_differences(one, two)}
    assert changed["world_size"]["recorded"] == 1 and changed["world_size"]["replay"] == 2
    assert changed["world_size"]["affects_bitwise"] is True


def _error_messages(stdout: str) -> list[str]:
    prefix = "BUNDLER_ERROR "
    return [json.loads(ln.removeprefix(prefix))["message"] for ln in stdout.splitlines() if ln.startswith(prefix)]


def test_batch_size_that_does_not_split_over_the_processes_exits_3_before_launching(
    tmp_path: Path, model_dir: Path
) -> None:
    paths = make_recipe(tmp_path, config_overrides={"train": {**TRAIN, "batch_size": 7}}, model_dir=model_dir)
    result = run_runtime(paths, tmp_path / "out", BUNDLER_NUM_PROCESSES="2")
    assert result.returncode == 3, result.stderr[-3000:]
    assert [m for m in _error_messages(result.stdout) if "batch_size = 7" in m]
    assert "accelerate launch" not in result.stderr
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.slow
def test_every_rank_verifies_the_dataset_and_a_changed_file_exits_3(tmp_path: Path, model_dir: Path) -> None:
    paths = make_recipe(tmp_path, config_overrides={"train": TRAIN}, model_dir=model_dir)
    with open(paths["data"] / "data.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "extra", "prompt": "p", "response": "r", "label": "positive"}) + "\n")
    result = run_runtime(paths, tmp_path / "out", BUNDLER_NUM_PROCESSES="2")
    assert "accelerate launch" in result.stderr  # refused inside the ranks, not by the launcher
    assert result.returncode == 3, result.stderr[-3000:]
    assert _error_messages(result.stdout)
    assert not (tmp_path / "out" / "results.json").exists()


# --- fast: no training ---


def test_replay_on_another_world_size_expects_only_equivalence_and_names_it(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    staging = tmp_path / "staging"
    staging.mkdir()
    losses = [6.25 - 0.05 * i for i in range(12)]
    old = record(bundle, staging, "one", losses)  # an env.json without `distributed`: one process
    new = record(
        bundle,
        staging,
        "two",
        [x * (1 + 1e-6) for x in losses],
        adapter=b"other-bits",
        env=env_record(distributed={"world_size": 2, "backend": "gloo"}),
    )
    report = compare(bundle, old, new)
    assert report["expected"] == "EQUIVALENT" and report["verdict"] == "EQUIVALENT"
    assert any("world_size" in line and "only equivalence" in line for line in report["expectation"])
    assert report["causes"] == []


def test_same_world_size_keeps_bitwise_expectation(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    staging = tmp_path / "staging"
    staging.mkdir()
    losses = [6.25 - 0.05 * i for i in range(12)]
    two = env_record(distributed={"world_size": 2, "backend": "gloo"})
    old = record(bundle, staging, "a", losses, env=two)
    new = record(bundle, staging, "b", losses, env=two)
    assert compare(bundle, old, new)["expected"] == "IDENTICAL"


def test_processes_flag_and_docker_gpu_count_set_the_runtime_process_count(tmp_path: Path) -> None:
    base = RunRequest(tmp_path, tmp_path / "model", tmp_path / "data")
    assert "BUNDLER_NUM_PROCESSES" not in runtime_env("venv", base)  # the recipe's num_processes decides
    assert runtime_env("venv", RunRequest(tmp_path, tmp_path, tmp_path, processes=2))["BUNDLER_NUM_PROCESSES"] == "2"
    gpus = RunRequest(tmp_path, tmp_path, tmp_path, gpus="2")
    assert runtime_env("docker", gpus)["BUNDLER_NUM_PROCESSES"] == "2"  # one process a GPU
    assert "BUNDLER_NUM_PROCESSES" not in runtime_env("docker", RunRequest(tmp_path, tmp_path, tmp_path, gpus="all"))
    both = RunRequest(tmp_path, tmp_path, tmp_path, gpus="2", processes=1)
    assert runtime_env("docker", both)["BUNDLER_NUM_PROCESSES"] == "1"


# --- through the runners ---


def _run_files(bundle: Path, run_id: str) -> dict[str, dict]:
    from bundler.bundle.bag import RUNS

    return {name: _json(bundle / RUNS / run_id / f"{name}.json") for name in ("env", "results", "run")}


@pytest.mark.slow
def test_quickstart_with_two_processes_builds_in_the_venv_and_replays_identical(tmp_path: Path) -> None:
    from tests.conftest import QUICKSTART, git, make_git_project, run_cli

    project = make_git_project(QUICKSTART, tmp_path / "quickstart")
    config = project / "bundle.toml"
    config.write_text(config.read_text().replace('device = "cpu"\n', 'device = "cpu"\nnum_processes = 2\n'))
    git(project, "commit", "-q", "-am", "two processes")
    built = run_cli("build", str(project), "--out", str(tmp_path / "bundle"), "--runner", "venv")
    assert built.returncode == 0, built.stderr[-3000:]
    from bundler.bundle.bag import list_runs

    (run_id,) = list_runs(tmp_path / "bundle")
    files = _run_files(tmp_path / "bundle", run_id)
    assert files["env"]["runner"] == "venv" and files["env"]["distributed"]["world_size"] == 2
    assert files["results"]["per_device_batch_size"] == 4
    replay = run_cli("replay", str(tmp_path / "bundle"), "--json")
    assert replay.returncode == 0, replay.stderr[-3000:]
    report = json.loads(replay.stdout)
    assert (report["verdict"], report["expected"]) == ("IDENTICAL", "IDENTICAL")
    # `bundler run --processes 1` overrides the recorded world size; replay then expects only equivalence.
    single = run_cli("run", str(tmp_path / "bundle"), "--processes", "1", "--json")
    assert single.returncode == 0, single.stderr[-3000:]
    single_id = json.loads(single.stdout)["run_id"]
    assert _run_files(tmp_path / "bundle", single_id)["env"]["distributed"]["world_size"] == 1


@pytest.mark.docker
@pytest.mark.slow
def test_docker_and_venv_runners_give_the_same_two_process_adapter(
    docker_client: object, registry: str, tmp_path: Path
) -> None:
    from bundler.runners.execute import execute, locate_inputs
    from tests.fixtures.projects import built_bundle

    bundle = built_bundle(tmp_path)
    ids = {}
    for runner in ("docker", "venv"):
        model, data = locate_inputs(bundle, None, None, runner)
        ids[runner] = execute(runner, RunRequest(bundle, model, data, max_steps=STEPS, processes=2))
    docker, venv = (_run_files(bundle, ids[r]) for r in ("docker", "venv"))
    assert docker["env"]["runner"] == "docker" and docker["env"]["distributed"]["world_size"] == 2
    assert docker["run"]["processes_override"] == 2
    assert docker["results"]["adapter_sha256"] == venv["results"]["adapter_sha256"]
