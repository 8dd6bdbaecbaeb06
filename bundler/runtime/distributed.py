"""Data-parallel training over several processes, launched with `accelerate launch` (torchrun underneath).

The result depends only on the configuration and the world size:
- every rank draws the same global batches from the one generator seeded by train.seed
  (batches.train_batches) and keeps a fixed slice of each micro-batch: rank r takes rows
  [r * b / W, (r + 1) * b / W), so train.batch_size is the global micro-batch and the per-step
  global batch is the single-process one;
- the loss is normalised by the global count of labelled tokens, so the per-rank gradients add up
  to the gradient of the whole batch;
- gradients are all-gathered and summed in rank order on every rank (not an all-reduce, whose
  reduction order is the backend's choice), so every rank takes the same optimizer step, bit for bit;
- LoRA is initialised on the CPU from its own seed (modeling.apply_lora): identical on every rank;
- dropout draws from torch's generator re-seeded with train.seed + rank before the first step.
Every rank verifies the input hashes and evaluates the (identical) weights; only rank 0 writes into
the run's output directory and prints BUNDLER_EVENT lines; the others write into a scratch directory
removed at exit.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .errors import EXIT_INPUT, RecipeInputError
from .specs import TrainSpec

PROCESSES_ENV = "BUNDLER_NUM_PROCESSES"
LAUNCHER_ENV = "BUNDLER_LAUNCHER"  # set by launch() for its children; absent: torchrun started the ranks itself
REDUCTION = "all_gather, then summed in rank order (float32)"
# Set for every launched process unless the caller set them. Single node only: rendezvous and gloo
# stay on the loopback device (a container run with --network none has no other). NVLink multicast
# (NVLS) is off: an NVLS all-reduce is another reduction order, and on shared hosts multicast objects
# can take the GPUs out of service (device notes, KINDS.md).
LAUNCH_ENV = {
    "GLOO_SOCKET_IFNAME": "lo",
    "NCCL_SOCKET_IFNAME": "lo",
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}
# Passed with --config_file so no `accelerate config` default in the caller's HOME changes the launch.
ACCELERATE_CONFIG = {
    "compute_environment": "LOCAL_MACHINE",
    "distributed_type": "MULTI_GPU",
    "mixed_precision": "no",
    "use_cpu": False,
    "debug": False,
    "num_machines": 1,
    "machine_rank": 0,
    "gpu_ids": "all",
    "rdzv_backend": "static",
    "same_network": True,
    "main_training_function": "main",
    "enable_cpu_affinity": False,
}


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank, world size, and how a global micro-batch is split."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None
    batch_size: int = 0
    grad_accum: int = 1
    seed: int | None = None

    @property
    def per_device_batch_size(self) -> int:
        return self.batch_size // self.size

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_world = World()


def requested_processes(train: TrainSpec) -> int:
    """Processes the run asks for: $BUNDLER_NUM_PROCESSES (a runner's override), else train.num_processes."""
    return int(os.environ.get(PROCESSES_ENV) or train.num_processes)


def is_launched() -> bool:
    """True inside a process that torchrun started (it sets WORLD_SIZE and RANK)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def check_batch_split(train: TrainSpec, processes: int) -> None:
    """train.batch_size is the global micro-batch: refuse one that does not split evenly over the processes."""
    batch_size = train.batch_size
    if batch_size % processes:
        raise RecipeInputError(
            f"train.batch_size = {batch_size} does not split evenly over {processes} processes "
            "(batch_size is the global micro-batch; each process takes batch_size / processes rows)",
            f"set train.batch_size to a multiple of {processes}, or change the number of processes",
            kind="config",
        )


def launch(processes: int, train: TrainSpec, recipe_dir: Path, out: Path) -> int:
    """Run `accelerate launch --multi_gpu --num_processes N -m runtime RECIPE OUT`; return the exit code.

    --multi_gpu is accelerate 1.15's torchrun path, on CPUs too: its --cpu path starts a single
    process unless mpirun is configured (commands/launch.py, simple_launcher). The ranks choose
    gloo or NCCL themselves (start_world). Exit 3 when the first rank to fail refused its input.
    """
    check_batch_split(train, processes)
    try:
        from accelerate.commands.launch import launch_command, launch_command_parser
    except ImportError:
        raise RecipeInputError(
            f"train.num_processes = {processes} needs accelerate in the locked environment",
            "add accelerate to requirements.in and run `bundler lock`, or run with 1 process",
            kind="config",
        ) from None
    for name, value in LAUNCH_ENV.items():
        os.environ.setdefault(name, value)
    os.environ[LAUNCHER_ENV] = "accelerate launch (torchrun)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, cores // processes))
    with tempfile.TemporaryDirectory(prefix="bundler-accelerate-") as tmp:
        config = Path(tmp) / "accelerate_config.json"
        config.write_text(json.dumps(ACCELERATE_CONFIG, sort_keys=True) + "\n", encoding="utf-8")
        argv = [
            "--config_file", str(config), "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", "0", "--num_cpu_threads_per_process", threads,
            "-m", "runtime", str(recipe_dir), str(out),
        ]  # fmt: skip
        print("accelerate launch " + " ".join(argv[2:]), file=sys.stderr, flush=True)
        try:
            launch_command(launch_command_parser().parse_args(argv))
        except Exception as error:  # noqa: BLE001 - torchrun's ChildFailedError; accelerate may wrap it
            # torchrun stops the other ranks once one fails: the first failure is the cause
            first = error.get_first_failure()[1] if hasattr(error, "get_first_failure") else None
            print(f"a launched process failed: {type(error).__name__}", file=sys.stderr, flush=True)
            return EXIT_INPUT if getattr(first, "exitcode", 1) == EXIT_INPUT else 1
    return 0


def start_world(train: TrainSpec, device: torch.device, seed: int) -> World:
    """Join the process group when torchrun started this process; return (and remember) this rank."""
    global _world
    batch_size, grad_accum = train.batch_size, train.grad_accum
    if not is_launched() or int(os.environ["WORLD_SIZE"]) == 1:
        _world = World(batch_size=batch_size, grad_accum=grad_accum, seed=seed)
        return _world
    size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    check_batch_split(train, size)
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)  # torch.device("cuda") then means this rank's GPU
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)  # env:// rendezvous that torchrun set up
        atexit.register(_close)
    _world = World(rank, size, local_rank, backend, batch_size, grad_accum, seed)
    return _world


def _close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def current() -> World:
    return _world


def is_main_process() -> bool:
    return _world.is_main


def rank_output_dir(out: Path) -> Path:
    """`out` on rank 0; on any other rank a private scratch directory, removed when the process exits."""
    if _world.is_main:
        return out
    scratch = Path(tempfile.mkdtemp(prefix=f"bundler-rank{_world.rank}-"))
    atexit.register(shutil.rmtree, scratch, True)
    return scratch


def seed_rank(settings: dict[str, dict[str, Any]]) -> None:
    """Give each rank its own dropout stream (train.seed + rank) and record the rule in env.json.

    The one place besides determinism.configure_determinism that seeds a global generator: dropout
    draws from torch's default generator, and identical masks on every rank would repeat one mask
    over different rows. Called after the model and LoRA are made, so nothing else draws from it.
    """
    if _world.size == 1 or _world.seed is None:
        return
    torch.manual_seed(_world.seed + _world.rank)
    settings["dropout_seed"] = {
        "value": [_world.seed + r for r in range(_world.size)],
        "why": "rank r draws dropout masks from torch's generator seeded with train.seed + r "
        "(listed by rank), reset before the first step",
    }
    settings["gradient_reduction"] = {
        "value": REDUCTION,
        "why": "a fixed summation order: every rank steps with the same gradient bits, "
        "whatever the collective's own reduction order",
    }


MicroBatches = list[tuple[torch.Tensor, torch.Tensor]]


def rank_slice(micro_batches: MicroBatches) -> MicroBatches:
    """This rank's fixed rows of each global micro-batch (all of them in a single process)."""
    if _world.size == 1:
        return micro_batches
    share = []
    for batch in micro_batches:
        rows = batch[0].shape[0] // _world.size
        lo, hi = _world.rank * rows, (_world.rank + 1) * rows
        share.append(tuple(t[lo:hi] for t in batch))
    return share


def sum_across_ranks(params: list[torch.Tensor], loss: torch.Tensor, tokens: int) -> tuple[torch.Tensor, int]:
    """Replace every gradient by the sum over ranks, added in rank order; return the summed loss and tokens."""
    if _world.size == 1:
        return loss, tokens
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).to(torch.float32) for g in grads])
    stats = torch.tensor([float(loss), float(tokens)], dtype=torch.float64, device=flat.device)
    total, stat_total = _gather_sum(flat), _gather_sum(stats)
    offset = 0
    for param, grad in zip(params, grads, strict=True):
        n = grad.numel()
        param.grad = total[offset : offset + n].view_as(grad).to(grad.dtype)
        offset += n
    return stat_total[0].to(torch.float32), int(stat_total[1])


def _gather_sum(tensor: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(tensor) for _ in range(_world.size)]
    dist.all_gather(parts, tensor)
    total = parts[0].clone()
    for part in parts[1:]:
        total += part
    return total


def describe_world() -> dict[str, Any]:
    """env.json's `distributed`: world size, topology, backend, batch layout and how gradients were combined.

    The topology (nodes x ranks per node, from torchrun's GROUP_WORLD_SIZE and LOCAL_WORLD_SIZE) is
    recorded, never used: the result depends on the world size alone.
    """
    launched = _world.size > 1
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", 1)) if launched else 1
    ranks_per_node = int(os.environ.get("LOCAL_WORLD_SIZE", _world.size)) if launched else 1
    return {
        "world_size": _world.size,
        "nodes": nodes,
        "ranks_per_node": ranks_per_node,
        "topology": f"{nodes} node(s) x {ranks_per_node} rank(s)",
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if _world.backend == "nccl" else None,
        "backend": _world.backend,
        "launcher": os.environ.get(LAUNCHER_ENV, "torchrun") if launched else None,
        "per_device_batch_size": _world.per_device_batch_size,
        "global_batch_size": _world.batch_size * _world.grad_accum,
        "grad_accum": _world.grad_accum,
        "gradient_reduction": REDUCTION if _world.size > 1 else None,
        "env": {name: os.environ.get(name) for name in sorted(LAUNCH_ENV)} if _world.size > 1 else {},
    }


def results_fields() -> dict[str, int]:
    """results.json's record of the layout: world size, per-device batch size, gradient accumulation."""
    return {
        "world_size": _world.size,
        "per_device_batch_size": _world.per_device_batch_size,
        "grad_accum": _world.grad_accum,
    }
