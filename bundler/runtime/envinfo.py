"""The one function that captures the environment a run happened in (env.json)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from . import ENV_SCHEMA
from .distributed import describe_world

LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "safetensors",
    "numpy",
    "tokenizers",
    "bitsandbytes",
    "pyarrow",
    "mlflow",
    "wandb",
)


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu() -> dict[str, Any] | None:
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    driver = None
    try:
        import ctypes

        version = ctypes.c_int()
        ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version))
        driver = f"{version.value // 1000}.{version.value % 1000 // 10}"
    except OSError:
        pass
    return {
        "name": props.name,
        "count": torch.cuda.device_count(),
        "sm_count": props.multi_processor_count,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_bytes": props.total_memory,
        "driver_cuda_version": driver,
    }


def capture_environment(runner: str, image_digest: str, determinism: dict[str, Any]) -> dict[str, Any]:
    """Return env.json's content: hardware, libraries, image digest, determinism settings."""
    cuda = None
    if torch.version.cuda:
        cuda = {
            "runtime": torch.version.cuda,
            "cublas": _cublas_version(),
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "nccl": ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None,
        }
    return {
        "schema": ENV_SCHEMA,
        "runner": runner,
        "image_digest": image_digest or None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": {
            "name": _cpu_name(),
            "machine": platform.machine(),
            "threads": torch.get_num_threads(),
        },
        "libraries": {name: v for name in LIBRARIES if (v := _version(name))},
        "gpu": _gpu(),
        "cuda": cuda,
        "determinism": determinism,
        "distributed": describe_world(),
        "bundle_id": _recipe_id(Path(__file__).resolve().parent.parent),
    }


def _recipe_id(recipe: Path) -> str | None:
    """The bundle ID of the recipe this runtime was copied into (bag.recipe_id's rule), or None outside one.

    Computed, not passed in: `bundler record` matches a run made elsewhere (a cluster) to its bundle by it.
    """
    if not (recipe / "config.toml").is_file() or not (recipe / "model.json").is_file():
        return None
    lines = []
    for path in sorted(recipe.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            lines.append((f"data/recipe/{path.relative_to(recipe).as_posix()}", digest))
    return hashlib.sha256("".join(f"{sha}  {name}\n" for name, sha in sorted(lines)).encode()).hexdigest()


def _cublas_version() -> str | None:
    for dist in ("nvidia-cublas", "nvidia-cublas-cu13", "nvidia-cublas-cu12"):
        if version := _version(dist):
            return version
    return None
