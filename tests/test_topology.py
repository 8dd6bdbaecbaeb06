"""Topology independence: 2 nodes x 1 process give the adapter bytes of 1 node x 2 processes.

The two "nodes" are two torchrun agents on this machine that meet through torchrun's c10d rendezvous on
127.0.0.1 (what a cluster's pods do over the network); the one node runs both ranks under one agent.
gloo on the CPU, the quickstart-size tiny model. Each run takes about 20 s on the 2-core dev machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.runtime_recipe import make_recipe

STEPS = 4
TRAIN = {"max_steps": STEPS, "eval_every": STEPS, "batch_size": 8}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(paths: dict[str, Path]) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(paths["recipe"]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "BUNDLER_MODEL_DIR": str(paths["model"]),
        "BUNDLER_DATA_DIR": str(paths["data"]),
        "BUNDLER_RUNNER": "host",
        "BUNDLER_IMAGE_DIGEST": "",
        "PYTHONHASHSEED": "0",
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("BUNDLER_NUM_PROCESSES", None)
    return env


def _torchrun(paths: dict[str, Path], out: Path, *launch: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "runtime", str(paths["recipe"]), str(out)]
    return subprocess.Popen(command, env=_env(paths), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-4000:]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same recipe as 2 nodes x 1 rank (c10d rendezvous) and as 1 node x 2 ranks; the output of rank 0 each."""
    root = tmp_path_factory.mktemp("topology")
    paths = make_recipe(root, config_overrides={"train": TRAIN})
    endpoint = f"127.0.0.1:{_free_port()}"
    rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "topology", "--max-restarts", "0"]
    nodes = [
        _torchrun(
            paths, root / f"node{i}", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(i), *rendezvous
        )
        for i in range(2)
    ]
    _wait(nodes)
    # c10d hands out ranks in the order the agents joined: rank 0 may be on either node
    (two_nodes,) = [root / f"node{i}" for i in range(2) if (root / f"node{i}" / "results.json").is_file()]
    one = ["--nnodes", "1", "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    _wait([_torchrun(paths, root / "one_node", *one)])
    return {"two_nodes": two_nodes, "one_node": root / "one_node"}


@pytest.mark.slow
def test_two_nodes_of_one_rank_give_the_adapter_bytes_of_one_node_of_two(runs: dict[str, Path]) -> None:
    a, b = runs["two_nodes"], runs["one_node"]
    for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "reference_outputs.jsonl"):
        assert _sha(a / name) == _sha(b / name), name
    assert (a / "metrics.jsonl").read_text().count("\n") == (b / "metrics.jsonl").read_text().count("\n")
    losses = [[json.loads(line)["loss"] for line in (o / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
              for o in (a, b)]  # fmt: skip
    assert losses[0] == losses[1] and len(losses[0]) == STEPS


@pytest.mark.slow
def test_env_json_records_the_topology_it_did_not_depend_on(runs: dict[str, Path]) -> None:
    two = json.loads((runs["two_nodes"] / "env.json").read_text())["distributed"]
    one = json.loads((runs["one_node"] / "env.json").read_text())["distributed"]
    assert (two["world_size"], two["nodes"], two["ranks_per_node"]) == (2, 2, 1)
    assert (one["world_size"], one["nodes"], one["ranks_per_node"]) == (2, 1, 2)
    assert two["launcher"] == one["launcher"] == "torchrun" and two["backend"] == "gloo" and two["nccl"] is None
    assert two["topology"] == "2 node(s) x 1 rank(s)"
