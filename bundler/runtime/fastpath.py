"""Choosing and running the fused training path: decoder, chunked fused loss, settings for env.json.

On by default on CUDA for Llama-family models without quantization; off on the CPU, where
compiling costs more than a tiny model's whole run. `BUNDLER_FUSED` overrides the choice
(`1` compiled, `eager` the same path without torch.compile, `0` off) and is recorded.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .fused_decoder import FusedDecoder, unsupported_reason
from .kernels import Kernels, configure_compile
from .loss import IGNORE_INDEX

CHUNK_TOKENS = 1024


class _FusedChunkedCE(torch.autograd.Function):
    """As loss.py's chunked cross-entropy, with each chunk's softmax and gradient in one kernel."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, scale, kernel):  # type: ignore[no-untyped-def,override]
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], CHUNK_TOKENS):
            h, y = hidden[start : start + CHUNK_TOKENS], labels[start : start + CHUNK_TOKENS]
            logits = h.to(weight.dtype) @ weight.t()  # bf16 on CUDA: never a float32 copy
            loss, grad_logits = kernel(logits, y.clamp(min=0), (y != IGNORE_INDEX).float(), scale)
            total += loss
            if grad_hidden is not None:
                grad_hidden[start : start + CHUNK_TOKENS] = grad_logits @ weight
        ctx.save_for_backward(grad_hidden if grad_hidden is not None else torch.empty(0))
        return total * scale

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[no-untyped-def,override]
        (grad_hidden,) = ctx.saved_tensors
        return (grad_hidden * grad_output).to(grad_hidden.dtype), None, None, None, None


def fused_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, normalizer: float, kernels: Kernels
) -> torch.Tensor:
    """Sum of next-token cross-entropy over labelled positions / normalizer; lm_head frozen."""
    shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    flat = hidden.reshape(-1, hidden.shape[-1])
    # A tensor, not a float: a new float per step would make torch.compile recompile.
    scale = torch.tensor(1.0 / normalizer, dtype=torch.float32, device=hidden.device)
    return _FusedChunkedCE.apply(flat, weight, shifted.reshape(-1), scale, kernels.ce_chunk)


class FusedPath:
    """The fused decoder plus loss for one LoraModel; refreshed after every optimizer step."""

    def __init__(self, model: Any, kernels: Kernels):
        self.model = model
        self.kernels = kernels
        self.decoder = FusedDecoder(model.peft_model, kernels)
        self._training: bool | None = None

    def refresh(self) -> None:
        self.decoder.refresh()

    def hidden_states(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        training = bool(self.model.peft_model.training)
        if training != self._training:
            self.decoder.set_training(training)
            self._training = training
        return self.decoder.hidden_states(input_ids, positions)

    def loss(
        self, input_ids: torch.Tensor, labels: torch.Tensor, normalizer: float, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden = self.hidden_states(input_ids, positions)
        return fused_cross_entropy(hidden, self.model.lm_head_weight(), labels, normalizer, self.kernels)


def requested_mode(device: torch.device) -> str:
    """'compiled', 'eager' or 'off' from BUNDLER_FUSED (default: compiled on CUDA, off on the CPU)."""
    value = os.environ.get("BUNDLER_FUSED", "auto").strip().lower()
    if value in ("0", "off", "false"):
        return "off"
    if value == "eager":
        return "eager"
    if value in ("1", "on", "true", "compiled"):
        return "compiled"
    return "compiled" if device.type == "cuda" else "off"


def enable_fused_path(
    model: Any, optimizer: torch.optim.Optimizer, *, deterministic: bool, quantized: bool
) -> dict[str, dict[str, Any]]:
    """Attach a FusedPath to `model` when chosen and possible; return env.json settings."""
    mode = requested_mode(model.device)
    reason = None
    if mode == "off":
        reason = "off (BUNDLER_FUSED or CPU default)"
    elif quantized:
        reason = "4-bit base weights take peft's bitsandbytes path"
    else:
        reason = unsupported_reason(model.base)
    settings: dict[str, dict[str, Any]] = {}
    if reason is not None:
        settings["fused_path"] = {"value": False, "why": f"transformers+peft modules: {reason}"}
        return settings
    compiled = mode == "compiled"
    if compiled:
        settings["torch.compile"] = {
            "value": configure_compile(deterministic),
            "why": "per-op regions (RMSNorm, RoPE, SwiGLU, loss chunk); Inductor autotuning pinned: no "
            "benchmark that can change numerics, no coordinate descent, no max-autotune",
        }
    try:
        path = FusedPath(model, Kernels(compiled))
    except ValueError as error:  # e.g. per-module ranks (peft rank_pattern): one product per group needs one rank
        settings["fused_path"] = {"value": False, "why": f"transformers+peft modules: {error}"}
        return settings
    model.fused = path
    optimizer.register_step_post_hook(lambda *_: path.refresh())  # s*B columns follow each step
    settings["fused_path"] = {
        "value": {"mode": mode, **path.decoder.describe()},
        "why": "q/k/v and gate/up each one product with LoRA folded in; fused norm/rope/swiglu/loss "
        "(bench/RESULTS.md, issue 19)",
    }
    return settings
