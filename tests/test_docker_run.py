"""The docker runner against the real engine and registry (.ci/setup-docker.sh starts them).

One quickstart bundle (its base image re-pinned to whatever digest this machine's registry holds) and one
image built from it serve the whole module; runs train a few steps only (RunRequest.max_steps).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bundler.bundle.bag import RUNS, bundle_id_of, list_runs
from bundler.recipe.dockerfile import LABEL_BUNDLE_ID
from bundler.runners.docker import build_image, container_process, image_tag, run_kwargs
from bundler.runners.execute import choose_runner, locate_inputs, run_bundle
from bundler.runners.launch import RunRequest
from tests.conftest import git, run_cli
from tests.fixtures.projects import built_bundle, repinned_quickstart

pytestmark = pytest.mark.docker
STEPS = 6


@pytest.fixture(scope="module")
def bundle(docker_client: Any, registry: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_bundle(tmp_path_factory.mktemp("docker-run"))


@pytest.fixture(scope="module")
def image(docker_client: Any, bundle: Path) -> Iterator[Any]:
    """The bundle's image, built once (offline, from the verified wheelhouse) for every test here."""
    built, made = build_image(docker_client, bundle, bundle_id_of(bundle))
    assert made["image_build"] in {"built", "reused"}
    yield built
    try:
        docker_client.images.remove(built.id, force=True)
    except Exception:  # another tag may still hold it
        pass


def results(bundle: Path, run_id: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    run = bundle / RUNS / run_id
    return tuple(json.loads((run / name).read_text()) for name in ("run.json", "results.json", "env.json"))  # type: ignore[return-value]


@pytest.mark.slow
def test_docker_venv_and_host_runners_give_the_same_adapter(bundle: Path, image: Any) -> None:
    adapters = {}
    for runner in ("docker", "venv", "host"):
        model, data = locate_inputs(bundle, None, None, runner)
        # host: this interpreter's libraries differ from the lock in a few pure-Python packages (pydantic,
        # regex, ...); torch, transformers and peft are the locked versions, so the drift is recorded, not fatal.
        run_id = run_bundle(
            bundle, runner=runner, model_dir=model, data_dir=data, max_steps=STEPS, allow_drift=runner == "host"
        )
        run, result, env = results(bundle, run_id)
        assert run["runner"] == env["runner"] == runner
        assert result["steps"] == STEPS
        adapters[runner] = result["adapter_sha256"]
        if runner == "docker":
            assert run["environment"]["image_id"] == image.id
            assert run["environment"]["network"] == "none"
            assert env["image_digest"] == json.loads((bundle / "data/recipe/image.lock.json").read_text())["digest"]
    assert adapters["docker"] == adapters["venv"] == adapters["host"], adapters
    assert run_cli("verify", str(bundle)).returncode == 0


PROBE = r"""
import json, os, socket
def writable(path):
    try:
        with open(os.path.join(path, ".probe"), "w"):
            pass
        return True
    except OSError:
        return False
try:
    socket.create_connection(("127.0.0.1", 5000), timeout=2)
    reached = True
except OSError:
    reached = False
print(json.dumps({"uid": os.getuid(), "nics": sorted(os.listdir("/sys/class/net")), "reached_registry": reached,
                  "writable": {p: writable(p) for p in ("/", "/bundle/recipe", "/mnt/model", "/mnt/data", "/out")}}))
"""


def test_container_is_sealed_non_root_and_writes_only_its_output(
    bundle: Path, image: Any, docker_client: Any, tmp_path: Path
) -> None:
    model, data = locate_inputs(bundle, None, None, "docker")
    out = Path(tempfile.mkdtemp(dir=tmp_path))
    out.chmod(0o777)
    lock = json.loads((bundle / "data/recipe/image.lock.json").read_text())
    request = RunRequest(bundle, model, data)
    kwargs = run_kwargs(request, out, lock, bundle_id_of(bundle), user="1000:1000")
    kwargs.pop("detach")
    printed = docker_client.containers.run(image.id, entrypoint=["python", "-c", PROBE], remove=True, **kwargs)
    seen = json.loads(printed.decode().strip().splitlines()[-1])
    assert seen["uid"] == 1000
    assert seen["nics"] == ["lo"] and not seen["reached_registry"]
    assert seen["writable"] == {
        "/": False,
        "/bundle/recipe": False,
        "/mnt/model": False,
        "/mnt/data": False,
        "/out": True,
    }


def test_image_carries_the_bundle_id_and_starts_the_runtime_as_rendered(
    bundle: Path, image: Any, docker_client: Any
) -> None:
    assert image.labels[LABEL_BUNDLE_ID] == bundle_id_of(bundle)
    assert image_tag(bundle_id_of(bundle)) in image.tags
    command, env = container_process((bundle / "data/recipe/Dockerfile").read_text(), {})
    config = image.attrs["Config"]
    assert config["Entrypoint"] == command == ["python", "-m", "runtime", "/bundle/recipe", "/out"]
    lock = json.loads((bundle / "data/recipe/image.lock.json").read_text())
    base = docker_client.images.get(f"{lock['reference'].rsplit(':', 1)[0]}@{lock['digest']}")

    def as_dict(config: dict[str, Any]) -> dict[str, str]:
        return dict(item.split("=", 1) for item in config.get("Env") or [])

    # What the engine starts: the base image's ENV, overlaid by the rendered Dockerfile's (the run's env on top).
    assert as_dict(config) == {**as_dict(base.attrs["Config"]), **env}


def test_auto_picks_docker_when_the_engine_answers_else_venv(
    bundle: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bundler.runners.execute import runner_choice

    assert choose_runner("auto") == "docker"
    assert "the Docker engine on /var/run/docker.sock answered" in runner_choice("auto")[1]
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    assert choose_runner("auto") == "venv"


def test_sigterm_stops_and_removes_the_container_and_leaves_no_run(
    bundle: Path, image: Any, docker_client: Any
) -> None:
    before = list_runs(bundle)
    label = f"{LABEL_BUNDLE_ID}={bundle_id_of(bundle)}"
    child = subprocess.Popen(
        [sys.executable, "-m", "bundler", "run", str(bundle), "--runner", "docker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not docker_client.containers.list(filters={"label": label, "status": "running"}):
            assert child.poll() is None, child.communicate()
            assert time.time() < deadline, "no container started within 120 s"
            time.sleep(0.5)
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, stderr
    assert "interrupted" in stderr
    assert docker_client.containers.list(all=True, filters={"label": label}) == []
    assert list_runs(bundle) == before
    assert not list(bundle.parent.glob("*.partial")) and not list(bundle.parent.glob(".bundler-mounts-*"))
    assert run_cli("verify", str(bundle)).returncode == 0


def test_read_only_bundle_is_refused_before_building(bundle: Path, tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(mount)]).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        shutil.copytree(bundle, mount / "bundle")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        done = run_cli("run", str(mount / "bundle"), "--runner", "docker")
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert done.returncode == 2, done.stderr
    assert "Read-only file system" in done.stderr


def test_missing_model_snapshot_is_bad_input(bundle: Path, tmp_path: Path) -> None:
    done = run_cli("run", str(bundle), "--runner", "docker", "--model", str(tmp_path / "no-such-snapshot"))
    assert done.returncode == 2
    assert "no-such-snapshot" in done.stderr and "does not exist" in done.stderr


def test_gpus_without_an_nvidia_runtime_fail_before_building(bundle: Path, docker_client: Any) -> None:
    if any("nvidia" in name for name in docker_client.info().get("Runtimes", {})):
        pytest.skip("this engine has an NVIDIA runtime")
    done = run_cli("run", str(bundle), "--runner", "docker", "--gpus", "all")
    assert done.returncode == 2
    assert "no NVIDIA runtime" in done.stderr and "hint: install the NVIDIA Container Toolkit" in done.stderr


def test_an_engine_that_does_not_answer_is_named(bundle: Path, tmp_path: Path) -> None:
    done = run_cli("run", str(bundle), "--runner", "docker", env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})
    assert done.returncode == 2
    assert "no Docker engine answers" in done.stderr and "--runner venv" in done.stderr


def test_base_image_digest_the_local_registry_lacks_is_bad_input_naming_this_machines_digest(
    docker_client: Any, registry: str, tmp_path: Path
) -> None:
    from bundler.recipe.images import resolve_digest

    gone = built_bundle(tmp_path, digest="sha256:" + "0" * 64)
    done = run_cli("run", str(gone), "--runner", "docker")
    assert done.returncode == 2, done.stderr
    assert "sha256:" + "0" * 64 in done.stderr and "is not available" in done.stderr
    here = resolve_digest("127.0.0.1:5000/bundler/debian-python:3.11")["manifest_digest"]
    assert f"this machine's base image is 127.0.0.1:5000/bundler/debian-python:3.11@{here}" in done.stderr
    assert "bundler lock PROJECT" in done.stderr
    assert not docker_client.images.list(filters={"label": f"{LABEL_BUNDLE_ID}={bundle_id_of(gone)}"})


@pytest.mark.slow
def test_planted_secrets_reach_no_image_layer(
    docker_client: Any, registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "HF_TOKEN": "hf_" + "Q7" * 17,
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYplanted01",
        "WANDB_API_KEY": "b4nd1er" * 6,
    }
    project = repinned_quickstart(tmp_path)
    config = project / "bundle.toml"
    config.write_text(config.read_text().replace("seed = 1234", "seed = 4321"))
    git(project, "commit", "-q", "-am", "another seed, so another image is built")
    built = run_cli("build", str(project), "--out", str(tmp_path / "bundle"), "--no-run", env=secrets)
    assert built.returncode == 0, built.stderr
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    image, made = build_image(docker_client, tmp_path / "bundle", bundle_id_of(tmp_path / "bundle"))
    assert made["image_build"] == "built"
    try:
        wanted = [value.encode() for value in secrets.values()]
        control = b"seed = 4321"  # the recipe's config is in a layer: the scan does see layer contents
        found: set[bytes] = set()
        tail = b""
        for chunk in docker_client.api.get_image(image.id):  # `docker save`: every layer, uncompressed
            window = tail + chunk
            found.update(needle for needle in [*wanted, control] if needle in window)
            tail = window[-256:]
        assert control in found
        assert not found & set(wanted), "a planted secret reached an image layer"
    finally:
        docker_client.images.remove(image.id, force=True)
