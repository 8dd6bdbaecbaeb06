"""QLoRA: the base model loaded in 4 bits (bitsandbytes NF4, double quantization), LoRA on top.

What 4 bits does to reproducibility: the frozen base weights are stored as NF4 codes plus per-block
scales and are dequantized to the compute dtype inside bitsandbytes' own CUDA kernels on every
forward and backward. Those kernels are outside `torch.use_deterministic_algorithms` (it cannot
see them), and their rounding and reduction order belong to one bitsandbytes build on one GPU
architecture. So a 4-bit run is repeatable only with the same bitsandbytes version, torch/CUDA
build and GPU model; env.json records all three. Whether two runs on one GPU are bit-identical is
measured, not assumed: bench/bench_gpu_quant.py, results in bench/RESULTS.md ("QLoRA").
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import torch

from .errors import RecipeInputError
from .specs import LoraSpec

QUANT_TYPE = "nf4"
DOUBLE_QUANT = True


def is_4bit(lora: LoraSpec) -> bool:
    return lora.quantization == "4bit"


def bitsandbytes_version() -> str | None:
    try:
        return importlib.metadata.version("bitsandbytes")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_quantization(lora: LoraSpec, device: torch.device) -> None:
    """Refuse a quantization this machine cannot run, before anything is loaded or trained."""
    mode = lora.quantization
    if mode == "none":
        return
    if mode != "4bit":
        raise RecipeInputError(
            f"lora.quantization = {mode!r} is not known to this runtime",
            'set lora.quantization = "4bit" or "none"',
            kind="config",
        )
    missing = []
    if device.type != "cuda":
        missing.append(f"the run is on {device.type}, with no CUDA GPU")
    if bitsandbytes_version() is None:
        missing.append("bitsandbytes is not installed")
    if missing:
        raise RecipeInputError(
            "4-bit needs a CUDA GPU and bitsandbytes: " + "; ".join(missing),
            "run on a CUDA GPU with bitsandbytes in requirements.in (then `bundler lock`), "
            'or set lora.quantization = "none"',
            kind="config",
        )


def load_4bit_model(model_dir: Path, compute_dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """Load the base model in NF4 on `device` and prepare it for k-bit training (no checkpointing)."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=QUANT_TYPE,
        bnb_4bit_use_double_quant=DOUBLE_QUANT,
        bnb_4bit_compute_dtype=compute_dtype,
    )
    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        quantization_config=config,
        dtype=compute_dtype,
        device_map={"": device.index if device.index is not None else 0},
        attn_implementation="sdpa",
        local_files_only=True,
    )
    # peft casts the remaining bf16 weights (norms, embeddings, lm_head) to float32 for stable
    # training. Gradient checkpointing stays off, as in the unquantized path: it trades speed for
    # memory independently of 4 bits, and would make the bf16/4-bit comparison unfair.
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def quantization_settings(lora: LoraSpec, compute_dtype: torch.dtype) -> dict[str, dict[str, Any]]:
    """The env.json determinism entry for 4-bit runs ({} when unquantized)."""
    if not is_4bit(lora):
        return {}
    return {
        "quantization": {
            "value": {
                "mode": "4bit",
                "quant_type": QUANT_TYPE,
                "double_quant": DOUBLE_QUANT,
                "compute_dtype": str(compute_dtype).removeprefix("torch."),
                "bitsandbytes": bitsandbytes_version(),
                "gradient_checkpointing": False,
            },
            "why": "base weights are dequantized by bitsandbytes kernels that deterministic mode "
            "cannot see; a run repeats only with the same bitsandbytes version and GPU architecture",
        }
    }
