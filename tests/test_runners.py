"""Runner pieces that need no engine: GPU requests, pre-build refusals, output parsing, the container's process."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bundler.errors import (
    DriverTooOldError,
    EngineUnavailableError,
    InputError,
    OutputNotWritableError,
    TrainingError,
)
from bundler.recipe.dockerfile import render_dockerfile
from bundler.runners.docker import (
    check_driver,
    check_gpu_runtime,
    container_process,
    gpu_device_requests,
    readable_mount,
    run_kwargs,
)
from bundler.runners.host import host_invocation
from bundler.runners.launch import LineSplitter, RunRequest, RuntimeLog, staging_dir

REPO = Path(__file__).resolve().parent.parent
IMAGE_LOCK = json.loads((REPO / "examples" / "quickstart" / "image.lock.json").read_text())
CUDA_LOCK = {**IMAGE_LOCK, "cuda": "12.8", "min_driver": "570.26"}


# --- the GPU request docker-py receives ---------------------------------------------------------


def test_gpus_all_asks_the_engine_for_every_gpu() -> None:
    (request,) = gpu_device_requests("all")
    assert dict(request) == {"Driver": "", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}


def test_gpus_n_asks_for_exactly_n() -> None:
    (request,) = gpu_device_requests("2")
    assert request["Count"] == 2
    assert request["Capabilities"] == [["gpu"]]


def test_no_gpus_sends_no_device_request() -> None:
    assert gpu_device_requests(None) == []
    assert gpu_device_requests("0") == []


def test_malformed_gpus_is_bad_input() -> None:
    with pytest.raises(InputError) as caught:
        gpu_device_requests("two")
    assert caught.value.exit_code == 2


def test_run_kwargs_carry_the_gpu_request_and_seal_the_container(tmp_path: Path) -> None:
    request = RunRequest(tmp_path, tmp_path / "model", tmp_path / "data", gpus="all")
    kwargs = run_kwargs(request, tmp_path / "out", CUDA_LOCK, "b" * 64, user="1000:1000")
    assert [dict(r) for r in kwargs["device_requests"]] == [dict(gpu_device_requests("all")[0])]
    assert kwargs["network_mode"] == "none"
    assert kwargs["read_only"] is True
    modes = {v["bind"]: v["mode"] for v in kwargs["volumes"].values()}
    assert modes == {"/mnt/model": "ro", "/mnt/data": "ro", "/out": "rw"}
    assert kwargs["user"] != "0" and not kwargs["user"].startswith("0:")
    assert kwargs["environment"]["BUNDLER_IMAGE_DIGEST"] == CUDA_LOCK["digest"]


# --- refusals before anything is built -------------------------------------------------------------


def test_gpus_without_an_nvidia_runtime_are_refused() -> None:
    with pytest.raises(EngineUnavailableError) as caught:
        check_gpu_runtime({"Runtimes": {"runc": {}, "io.containerd.runc.v2": {}}}, "all")
    assert "no NVIDIA runtime" in str(caught.value)
    assert "nvidia-ctk" in caught.value.hint
    assert caught.value.exit_code == 2


def refused(check: Callable[[], None]) -> bool:
    try:
        check()
    except (EngineUnavailableError, DriverTooOldError):
        return True
    return False


def test_gpus_are_refused_exactly_when_no_nvidia_runtime_is_registered() -> None:
    nvidia = {"Runtimes": {"runc": {}, "nvidia": {"path": "nvidia-container-runtime"}}}
    runc_only = {"Runtimes": {"runc": {}}}
    outcomes = {
        (engine, gpus): refused(lambda info=info, gpus=gpus: check_gpu_runtime(info, gpus))
        for engine, info in (("nvidia", nvidia), ("runc", runc_only))
        for gpus in ("1", "all", None)
    }
    assert outcomes == {
        ("nvidia", "1"): False,
        ("nvidia", "all"): False,
        ("nvidia", None): False,
        ("runc", "1"): True,
        ("runc", "all"): True,
        ("runc", None): False,
    }


def test_driver_older_than_the_image_needs_is_refused() -> None:
    with pytest.raises(DriverTooOldError) as caught:
        check_driver(CUDA_LOCK, "535.104.05")
    assert "535.104.05" in str(caught.value) and "570.26" in str(caught.value)


def test_the_driver_is_refused_exactly_when_older_than_the_image_needs() -> None:
    outcomes = {
        (name, driver): refused(lambda lock=lock, driver=driver: check_driver(lock, driver))
        for name, lock in (("cuda", CUDA_LOCK), ("cpu", IMAGE_LOCK))
        for driver in ("535.104.05", "570.26", "580.65.06", None)
    }
    # the CPU image's min_driver is "none"; no driver visible means nothing to compare (the GPU check refuses)
    assert outcomes == {
        ("cuda", "535.104.05"): True,
        ("cuda", "570.26"): False,
        ("cuda", "580.65.06"): False,
        ("cuda", None): False,
        ("cpu", "535.104.05"): False,
        ("cpu", "570.26"): False,
        ("cpu", "580.65.06"): False,
        ("cpu", None): False,
    }


def test_bundle_on_a_read_only_filesystem_is_refused(tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    (mount).mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        (mount / "bundle" / "data").mkdir(parents=True)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        with pytest.raises(OutputNotWritableError) as caught:
            staging_dir(mount / "bundle")
        assert "Read-only file system" in str(caught.value)
        assert caught.value.exit_code == 2
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# --- reading the runtime's output ----------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.steps: list[tuple[int, int, float | None]] = []

    def update(self, step: int, total: int, loss: float | None) -> None:
        self.steps.append((step, total, loss))


def test_events_drive_progress_and_success_returns() -> None:
    recorder = Recorder()
    log = RuntimeLog(recorder)
    for line in [
        'BUNDLER_EVENT {"event": "step", "step": 1, "max_steps": 2, "loss": 3.5}\n',
        "some log\n",
        'BUNDLER_EVENT {"event": "done"}\n',
    ]:
        log.feed(line)
    log.finish(0)
    assert recorder.steps == [(1, 2, 3.5)]
    assert log.tail == ["some log"]


def test_runtime_error_line_becomes_bad_input() -> None:
    log = RuntimeLog(Recorder())
    log.feed('BUNDLER_ERROR {"message": "model.safetensors: hash differs", "hint": "re-vendor it"}')
    with pytest.raises(InputError) as caught:
        log.finish(3)
    assert str(caught.value) == "model.safetensors: hash differs"
    assert caught.value.hint == "re-vendor it"


def test_a_crash_carries_the_last_lines() -> None:
    log = RuntimeLog(Recorder())
    for number in range(50):
        log.feed(f"line {number}")
    with pytest.raises(TrainingError) as caught:
        log.finish(1)
    assert "line 49" in str(caught.value) and "line 0\n" not in caught.value.log_tail


def test_log_chunks_split_mid_line_come_out_as_whole_lines() -> None:
    splitter = LineSplitter()
    out = splitter.feed(b"BUNDLER_EV") + splitter.feed(b'ENT {"a": 1}\nsec') + splitter.feed("ond é\n".encode()[:-2])
    out += splitter.feed("ond é\n".encode()[-2:]) + splitter.feed(b"tail")
    assert out == ['BUNDLER_EVENT {"a": 1}', "second é"]
    assert splitter.flush() == ["tail"]


# --- the container starts the runtime exactly as the host runner does -----------------------------


def test_container_entrypoint_and_env_match_the_host_runner(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    request = RunRequest(bundle, tmp_path / "model", tmp_path / "data", max_steps=5)
    out = tmp_path / "out"
    host_command, host_env = host_invocation(request, out)
    dockerfile = render_dockerfile(IMAGE_LOCK, "a" * 64)
    command, env = container_process(dockerfile, run_kwargs(request, out, IMAGE_LOCK, "b" * 64, user="1000:1000"))

    inside = {
        str(bundle / "data" / "recipe"): "/bundle/recipe",
        str(out): "/out",
        str(tmp_path / "model"): "/mnt/model",
        str(tmp_path / "data"): "/mnt/data",
    }
    assert command[0] == "python" and command[1:] == [inside.get(a, a) for a in host_command[1:]]
    differ = {"PATH", "HOME", "BUNDLER_RUNNER", "BUNDLER_IMAGE_DIGEST"}
    assert {k: inside.get(v, v) for k, v in host_env.items() if k not in differ} == {
        k: v for k, v in env.items() if k in host_env and k not in differ
    }
    assert set(host_env) - differ <= set(env)
    assert env["PYTHONHASHSEED"] == "0" and env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert env["BUNDLER_MAX_STEPS"] == "5"
    assert env["BUNDLER_RUNNER"] == "docker" and env["BUNDLER_IMAGE_DIGEST"] == IMAGE_LOCK["digest"]
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_unreadable_snapshot_is_mounted_as_a_readable_copy(tmp_path: Path) -> None:
    snapshot = tmp_path / "snap"
    snapshot.mkdir()
    (snapshot / "model.safetensors").write_bytes(b"weights")
    (snapshot / "model.safetensors").chmod(0o600)
    mounted = readable_mount(snapshot, "54321:54321", tmp_path / "scratch")
    assert mounted != snapshot.resolve()
    assert (mounted / "model.safetensors").read_bytes() == b"weights"
    assert (mounted / "model.safetensors").stat().st_mode & 0o004
    assert (snapshot / "model.safetensors").stat().st_mode & 0o777 == 0o600  # the original is untouched
    (snapshot / "model.safetensors").chmod(0o644)
    assert readable_mount(snapshot, "54321:54321", tmp_path / "scratch2") == snapshot.resolve()


def test_host_drift_names_only_the_packages_that_differ_and_refuses_them() -> None:
    from importlib import metadata

    from bundler.errors import InputError
    from bundler.runners.host import checked_drift

    lock = f"click=={metadata.version('click')} \\\n    --hash=sha256:{'0' * 64}\nrich==0.0.1\n    # via x\n"
    expected = [{"package": "rich", "locked": "0.0.1", "installed": metadata.version("rich")}]
    assert checked_drift(lock, allow_drift=True) == expected
    with pytest.raises(InputError, match="rich"):
        checked_drift(lock, allow_drift=False)


def test_auto_without_an_engine_picks_the_venv_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bundler.runners.execute import runner_choice

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    runner, why = runner_choice("auto")
    assert runner == "venv"
    assert f"no Docker engine answers on {tmp_path}/none.sock" in why and "--runner docker" in why
    assert runner_choice("venv") == ("venv", "") and runner_choice("docker") == ("docker", "")


def test_build_and_run_default_to_auto_and_read_bundler_runner(tmp_path: Path) -> None:
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k != "BUNDLER_RUNNER"} | {"NO_COLOR": "1", "COLUMNS": "200"}
    for command in ("build", "run"):
        shown = subprocess.run(
            [sys.executable, "-m", "bundler", command, "--help"], capture_output=True, text=True, env=env
        ).stdout
        assert "[default: auto]" in " ".join(shown.split()), shown
    refused = subprocess.run(
        [sys.executable, "-m", "bundler", "build", str(tmp_path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env | {"BUNDLER_RUNNER": "nowhere"},
    )
    assert refused.returncode == 2 and "nowhere" in refused.stderr
