"""Fused elementwise kernels of the fast decoder (RMSNorm, RoPE, SwiGLU, cross-entropy chunk).

Each is a small pure function compiled by torch.compile (Inductor, Triton on CUDA): one kernel
forward and one backward instead of the 4-8 eager kernels and float32 copies transformers runs.
Liger kernels do the same by hand; here Inductor writes them so the same code runs on the CPU in CI.

Determinism: Inductor normally benchmarks several Triton configs of a reduction at first use and
keeps the fastest, and a config with other block sizes or warps sums a row in another order, so
two runs could pick differently and differ in bits. `configure_compile` pins that: Inductor's
deterministic mode (`torch._inductor.config.deterministic`, torch >= 2.9) skips every benchmark
that can change numerics, and coordinate-descent tuning and max-autotune stay off. What was set is
returned for env.json, so a replay can tell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

COMPILE_SETTINGS = (
    ("max_autotune", False),
    ("max_autotune_pointwise", False),
    ("coordinate_descent_tuning", False),
)


def configure_compile(deterministic: bool) -> dict[str, Any]:
    """Pin Inductor's kernel choices; return what was set (for env.json)."""
    import torch._dynamo
    import torch._inductor.config as inductor

    chosen: dict[str, Any] = {}
    for name, value in COMPILE_SETTINGS:
        if hasattr(inductor, name):
            setattr(inductor, name, value)
            chosen[name] = value
    if hasattr(inductor, "deterministic"):
        inductor.deterministic = deterministic
        chosen["deterministic"] = deterministic
    elif deterministic:
        # Older Inductor: filter reduction configs under use_deterministic_algorithms instead.
        chosen["deterministic"] = "unavailable; reduction configs filtered by use_deterministic_algorithms"
    # Padded batches change the token count per step; after the second shape Inductor compiles a
    # dynamic kernel (automatic dynamic shapes), so a handful of compiles covers a run.
    name = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 32))
    return chosen


def _compiled(fn: Callable) -> Callable:
    return torch.compile(fn, fullgraph=True)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # transformers' LlamaRMSNorm numerics: float32 statistics, weight applied in the model dtype.
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * y.to(x.dtype)


def rms_norm_eager(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return _rms(x, weight, eps)


def add_rms_norm_eager(
    h: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add then RMSNorm: one pass instead of two."""
    h = h + delta
    return h, _rms(h, weight, eps)


def rope_eager(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int, kv_heads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split the fused q|k|v projection (N, (H+2KV)*D) and rotate q and k; out (N, heads, D)."""
    n, dim = qkv.shape[0], cos.shape[-1]
    q = qkv[:, : heads * dim].reshape(n, heads, dim)
    k = qkv[:, heads * dim : (heads + kv_heads) * dim].reshape(n, kv_heads, dim)
    v = qkv[:, (heads + kv_heads) * dim :].reshape(n, kv_heads, dim)
    c, s = cos[:, None, :], sin[:, None, :]

    def rotate(x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    return (q * c + rotate(q) * s), (k * c + rotate(k) * s), v.contiguous()


def swiglu_eager(gate_up: torch.Tensor, inter: int) -> torch.Tensor:
    return F.silu(gate_up[:, :inter]) * gate_up[:, inter:]


def dropout_backward_eager(dx: torch.Tensor, back: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """dx + sum over a group's projections of (adapter input gradient * its dropout mask)."""
    return dx + (back * mask).sum(0)


def ce_chunk_eager(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL of one chunk and d(scale * NLL)/d logits, from bf16 logits in one fused pass."""
    lf = logits.float()
    lse = torch.logsumexp(lf, dim=-1)
    picked = lf.gather(1, target[:, None]).squeeze(1)
    loss = ((lse - picked) * valid).sum()
    onehot = torch.arange(lf.shape[1], device=lf.device)[None, :] == target[:, None]
    probs = torch.exp(lf - lse[:, None])
    grad = ((probs - onehot.float()) * (valid * scale)[:, None]).to(logits.dtype)
    return loss, grad


class Kernels:
    """The kernel set one run uses: compiled (fused) or eager (the same math, op by op)."""

    def __init__(self, compiled: bool):
        self.compiled = compiled
        wrap = _compiled if compiled else (lambda f: f)
        self.rms_norm = wrap(rms_norm_eager)
        self.add_rms_norm = wrap(add_rms_norm_eager)
        self.rope = wrap(rope_eager)
        self.swiglu = wrap(swiglu_eager)
        self.ce_chunk = wrap(ce_chunk_eager)
        self.dropout_backward = wrap(dropout_backward_eager)

    def describe(self) -> dict[str, Any]:
        names = ["rms_norm", "add_rms_norm", "rope", "swiglu", "ce_chunk", "dropout_backward"]
        return {"compiled": self.compiled, "fused_ops": names, "source": "torch.compile (Inductor)"}
