"""The one function that sets every seed and determinism flag, and says what it set and why."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

Settings = dict[str, dict[str, Any]]

REQUIRED_ENV = {
    "PYTHONHASHSEED": "hash randomisation changes set iteration order; fixed before start",
    "CUBLAS_WORKSPACE_CONFIG": "':4096:8' fixes cuBLAS workspaces: deterministic reductions",
}


def configure_determinism(seed: int, *, deterministic: bool, device: torch.device) -> Settings:
    """Seed python/numpy/torch/CUDA, set the algorithm flags, and return {setting: {value, why}}."""
    settings: Settings = {}

    def record(name: str, value: Any, why: str) -> None:
        settings[name] = {"value": value, "why": why}

    for var, why in REQUIRED_ENV.items():
        record(
            f"env.{var}",
            os.environ.get(var),
            why + ("" if os.environ.get(var) else " (NOT SET at start)"),
        )

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    record(
        "seed",
        seed,
        "python random, numpy, torch CPU and CUDA generators; dropout masks draw from these",
    )

    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    record(
        "torch.use_deterministic_algorithms",
        deterministic,
        "strict mode: an op with no deterministic kernel raises instead of silently varying",
    )
    # fill_uninitialized_memory only catches reads of torch.empty(); measured on an H100
    # (gpu_probe.py, 1B LoRA): half of the deterministic-mode cost, no effect on any result.
    torch.utils.deterministic.fill_uninitialized_memory = False
    record(
        "torch.utils.deterministic.fill_uninitialized_memory",
        False,
        "costs ~4% on an H100 and changes no result; only guards reads of uninitialised memory",
    )
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False
    record("torch.backends.cudnn.deterministic", deterministic, "cuDNN picks deterministic kernels")
    record(
        "torch.backends.cudnn.benchmark",
        False,
        "benchmarking may choose a different kernel per run",
    )
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    record(
        "tf32",
        False,
        "TF32 rounds float32 matmuls to 10-bit mantissas; results would differ across GPUs",
    )
    record(
        "torch.compile",
        False,
        "no compilation: Triton autotuning may pick different kernels between runs",
    )
    if device.type == "cuda":
        # Flash attention's backward is deterministic under use_deterministic_algorithms; the
        # memory-efficient and cuDNN kernels are not; a fallback between backends changes numerics.
        torch.backends.cuda.enable_flash_sdp(True)
        torch.backends.cuda.enable_mem_efficient_sdp(False)
        if hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
            torch.backends.cuda.enable_cudnn_sdp(False)
        torch.backends.cuda.enable_math_sdp(True)
        record(
            "sdpa_backends",
            ["flash", "math"],
            "pinned: flash for bf16 (deterministic backward), math for float32; no fallback to "
            "memory-efficient or cuDNN attention, whose choice varies with shapes",
        )
    else:
        record("sdpa_backends", ["cpu"], "CPU attention kernels are deterministic")
    record(
        "lora_init",
        "cpu",
        "LoRA A matrices are drawn on the CPU from their own seeded generator, "
        "so the initial adapter is the same on every device",
    )
    record(
        "data_order",
        "numpy.random.Generator(PCG64)",
        "batches come from a generator seeded by train.seed",
    )
    return settings
