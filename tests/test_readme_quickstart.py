"""The README's first command, on a fresh clone with the engine running: the quickstart trains in the container.

The clone gets its own venv (system site packages visible, so torch is not fetched again) for the
`pip install -e` in .ci/setup, so the machine's own install of bundler is left alone. The engine, the
registry and the base image are already up here, so .ci/setup-docker.sh finds its work done.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REGISTRY = "127.0.0.1:5000"
REPOSITORY = "bundler/debian-python"
TAG = "3.11"


def readme_first_command() -> str:
    """The first ```sh block of the README: the command a new user runs."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.search(r"```sh\n(.+?)\n```", text, re.S).group(1).strip()  # type: ignore[union-attr]


def registry_digest() -> str:
    """What the registry itself says the base image tag points at (its Docker-Content-Digest header)."""
    request = urllib.request.Request(
        f"http://{REGISTRY}/v2/{REPOSITORY}/manifests/{TAG}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        method="HEAD",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.headers["Docker-Content-Digest"])


def test_readme_first_command_on_a_fresh_clone_trains_in_the_container(
    docker_client: object, registry: str, tmp_path: Path
) -> None:
    command = readme_first_command()
    assert command.startswith("bash .ci/setup && python3 -m bundler build examples/quickstart --out "), command
    assert "--runner" not in command  # the default, auto, picks the engine
    out = tmp_path / "quickstart-bundle"
    command = re.sub(r"--out \S+", f"--out {out}", command)

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("BUNDLER_RUNNER", "VIRTUAL_ENV")}
    env |= {"PATH": f"{venv}/bin:{os.environ['PATH']}", "PYTHONPATH": str(clone), "NO_COLOR": "1"}
    done = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]

    assert "setup-docker: ready" in done.stderr
    assert "(docker runner)" in done.stderr and "--runner auto: the Docker engine" in done.stderr
    bundle_id = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{64}", bundle_id)
    (run_dir,) = (out / "data" / "runs").iterdir()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["runner"] == "docker"
    digest = registry_digest()
    assert run["environment"]["base_image"] == f"{REGISTRY}/{REPOSITORY}:{TAG}@{digest}"
    pinned = json.loads((out / "data" / "recipe" / "image.lock.json").read_text())
    assert pinned["digest"] == digest  # the committed pin is the digest this machine's setup built
    source = json.loads((out / "data" / "recipe" / "source.json").read_text())
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert source["commit"] == head.stdout.strip()
