"""Run a finished bundle: find its inputs, pick a runner, record the run with its card and statement."""

from __future__ import annotations

import os
from pathlib import Path

from bundler import ui
from bundler.bundle.bag import RECIPE, VENDOR, reseal_run
from bundler.bundle.hashing import sha256_file
from bundler.errors import InputError
from bundler.publish.card import write_card
from bundler.runners.docker import run_docker
from bundler.runners.host import run_host
from bundler.runners.launch import RUNNERS, RunRequest
from bundler.runners.venv import run_venv


def locate_inputs(bundle: Path, model_dir: Path | None, data_dir: Path | None, runner: str) -> tuple[Path, Path]:
    """Find the model snapshot and dataset for running a finished bundle: vendored, given, or re-made."""
    import json

    recipe = bundle / RECIPE
    if data_dir is None:
        vendored = bundle / VENDOR / "dataset"
        if not vendored.is_dir():
            raise InputError(f"{bundle} does not vendor its dataset", "pass --data DIR with the dataset files")
        data_dir = vendored
    if model_dir is None:
        vendored = bundle / VENDOR / "model"
        record = json.loads((recipe / "model.json").read_text())
        if vendored.is_dir():
            model_dir = vendored
        elif record.get("source") == "hub":
            # deferred: it loads pydantic, which callers that never reach this line should not pay for
            from bundler.recipe.models import hub_snapshot

            model_dir = hub_snapshot(record)
        elif record.get("source") == "gguf":
            # deferred: it loads pydantic, which callers that never reach this line should not pay for
            from bundler.recipe.gguf import resolve_gguf

            lock = recipe / "requirements.lock"
            model_dir, _ = resolve_gguf(record, None, lock, sha256_file(lock), use_host=runner == "host")
        elif record.get("source") == "tiny":
            # deferred: it loads pydantic, which callers that never reach this line should not pay for
            from bundler.recipe.configfile import parse_config

            # deferred: it loads pydantic, which callers that never reach this line should not pay for
            from bundler.recipe.models import materialize_tiny

            config = parse_config((recipe / "config.toml").read_text(), recipe / "config.toml")
            lock = recipe / "requirements.lock"
            model_dir = materialize_tiny(config, lock, sha256_file(lock), use_host=runner == "host")
        else:
            raise InputError(
                f"{bundle} does not vendor its base model {record.get('id')}",
                "pass --model DIR with the model snapshot (its files are checked against model.json)",
            )
    if not model_dir.is_dir():
        raise InputError(f"model snapshot {model_dir} does not exist", "pass --model DIR with the snapshot")
    return model_dir, data_dir


def run_bundle(
    bundle: Path,
    *,
    runner: str,
    model_dir: Path,
    data_dir: Path,
    max_steps: int | None = None,
    allow_drift: bool = False,
    gpus: str | None = None,
    processes: int | None = None,
    tracking: dict | None = None,
) -> str:
    """Run a sealed bundle with a runner, then write its model card; return the run ID."""

    runner, why = runner_choice(runner)
    ui.stage(f"running the fine-tune ({runner} runner)")
    if why:
        ui.info(why)
    request = RunRequest(
        bundle,
        model_dir,
        data_dir,
        max_steps=max_steps,
        allow_drift=allow_drift,
        gpus=gpus,
        processes=processes,
        tracking=tracking,
    )
    run_id = execute(runner, request)
    annotate_run(bundle, run_id)
    return run_id


def annotate_run(bundle: Path, run_id: str) -> None:
    """Write a recorded run's model card, re-seal it, and write its statement and the RO-Crate."""
    # deferred: it loads cryptography, which callers that never reach this line should not pay for
    from bundler.publish.provenance import write_provenance

    ui.stage(f"run {run_id[:12]} recorded; writing the model card")
    write_card(bundle, run_id)
    reseal_run(bundle, run_id)
    write_provenance(bundle, run_id)


def choose_runner(runner: str) -> str:
    """`auto` is docker when an engine answers, else venv; run.json records the runner actually used."""
    return runner_choice(runner)[0]


def runner_choice(runner: str) -> tuple[str, str]:
    """The runner to use and, for `auto`, why (one line for stderr); an explicit runner needs no reason."""
    if runner != "auto":
        return runner, ""
    socket_path = engine_socket()
    if docker_available():
        return "docker", f"--runner auto: the Docker engine on {socket_path} answered, so the run is in a container"
    return "venv", (
        f"--runner auto: no Docker engine answers on {socket_path}, so the run uses a locked venv on this host "
        "(start one with .ci/setup-docker.sh, or pass --runner docker to require it)"
    )


def engine_socket() -> str:
    """The engine's Unix socket path: DOCKER_HOST's when set, else the default."""
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")


def execute(runner: str, request: RunRequest) -> str:
    """Run the bundle with the named runner and return the new run ID."""
    runner = choose_runner(runner)
    if runner == "venv":
        return run_venv(request)
    if runner == "host":
        return run_host(request)
    if runner == "docker":
        return run_docker(request)  # type: ignore[no-any-return]
    raise InputError(f"unknown runner {runner!r}", f"choose one of {', '.join(RUNNERS)}")


def docker_available() -> bool:
    """True when a Docker engine answers on its socket (a quick ping, no import of docker-py)."""
    import socket

    path = engine_socket()
    if not os.path.exists(path):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"200 OK" in sock.recv(64)
    except OSError:
        return False
