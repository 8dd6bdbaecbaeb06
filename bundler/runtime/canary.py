"""The determinism canary: one layer forward and backward twice on fixed inputs, compared bitwise.

Kernels that claim determinism sometimes are not (FA3's dq with deterministic=True is a known
case), and use_deterministic_algorithms only knows about ops that declare themselves. So before
training on a GPU the run checks the kernels it will use, at its own micro-batch shape: the first
decoder layer of the fused path (or, on the transformers path, the whole loss on one row), plus
the loss head, twice under one RNG state. The first tensor that differs names the op. Cost: one
layer of one step twice (~2/16 of a step at 1B), well under 1% of a 1000-step run.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from .data import IGNORE_INDEX

CANARY_SEED = 20261130


def _fixed(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, seed: int) -> torch.Tensor:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


def _packed_positions(batch: int, seq: int, device: torch.device) -> torch.Tensor:
    """Fixed documents per row (a quarter, a quarter, a half): the packed-attention kernels' input."""
    cuts = [seq // 4, seq // 4, seq - 2 * (seq // 4)]
    row = torch.cat([torch.arange(n) for n in cuts])
    return row[None].expand(batch, seq).contiguous().to(device)


def _fused_trace(model: Any, shape: tuple[int, int], packed: bool) -> list[tuple[str, torch.Tensor]]:
    """Layer 0 and the loss head of the fused path: forward outputs, then gradients, in order."""
    path = model.fused
    decoder = path.decoder
    layer = decoder.layers[0]
    batch, seq = shape
    dtype = decoder.decoder.embed_tokens.weight.dtype
    hidden = decoder.decoder.embed_tokens.weight.shape[1]
    vocab = model.lm_head_weight().shape[0]
    x = _fixed((batch * seq, hidden), dtype, model.device, CANARY_SEED).requires_grad_(True)
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(CANARY_SEED)).to(model.device)
    positions = _packed_positions(batch, seq, model.device) if packed else None
    h_ids, rope = decoder.embed(ids, positions)
    trace: list[tuple[str, torch.Tensor]] = []
    h, pending = decoder.layer_forward(layer, x, None, rope, (batch, seq), positions, trace)
    for _, t in trace:
        if t.requires_grad:
            t.retain_grad()
    _, out = path.kernels.add_rms_norm(h, pending, decoder.decoder.norm.weight, decoder.eps)
    from .fastpath import fused_cross_entropy

    loss = fused_cross_entropy(out.view(batch, seq, -1), model.lm_head_weight(), ids, float(batch * seq), path.kernels)
    loss.backward()
    grads = [(f"{name} (backward)", t.grad) for name, t in trace if t.grad is not None]
    params = [
        (f"{s.name}.lora_{ab} (weight gradient)", p.grad)
        for g in (layer.qkv, layer.o, layer.gate_up, layer.down)
        for s in g.slots
        if s.lora_a is not None
        for ab, p in (("A", s.lora_a), ("B", s.lora_b))
    ]
    del h_ids
    return [*trace, ("loss head (fused cross-entropy)", loss), *grads, ("layer input (backward)", x.grad), *params]


def _module_trace(model: Any, shape: tuple[int, int], packed: bool) -> list[tuple[str, torch.Tensor]]:
    """The transformers+peft path: the loss on one row, and every LoRA weight's gradient."""
    _, seq = shape
    positions = _packed_positions(1, seq, model.device) if packed else None
    vocab = model.lm_head_weight().shape[0]
    ids = torch.randint(0, vocab, (1, seq), generator=torch.Generator().manual_seed(CANARY_SEED)).to(model.device)
    labels = ids.clone()
    labels[:, :1] = IGNORE_INDEX
    loss = model.loss(ids, labels, float(seq), positions)
    loss.backward()
    named = [(n, p.grad) for n, p in sorted(model.peft_model.named_parameters()) if p.requires_grad]
    return [("loss", loss), *[(f"{n} (weight gradient)", g) for n, g in named if g is not None]]


def _one_pass(model: Any, shape: tuple[int, int], packed: bool = False) -> list[tuple[str, torch.Tensor]]:
    params = [p for p in model.peft_model.parameters() if p.requires_grad]
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(CANARY_SEED)  # same dropout masks both times; the run's RNG is untouched
        trace = (_fused_trace if model.fused is not None else _module_trace)(model, shape, packed)
        result = [(name, t.detach().clone()) for name, t in trace]
    for p in params:
        p.grad = None
    return result


def first_difference(a: list[tuple[str, torch.Tensor]], b: list[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first tensor that is not bitwise equal between two passes, or None."""
    for (name, x), (_, y) in zip(a, b, strict=True):
        if x.shape != y.shape or not torch.equal(x.view(-1).view(torch.uint8), y.view(-1).view(torch.uint8)):
            return name
    return None


def run_canary(
    model: Any, *, shape: tuple[int, int], deterministic: bool, packed: bool = False
) -> dict[str, dict[str, Any]]:
    """Run the canary on CUDA (skipped on the CPU); return env.json settings, claim included."""
    if model.device.type != "cuda":
        return {"determinism_canary": {"value": "skipped", "why": "CPU kernels: covered by CI's two-run tests"}}
    started = time.perf_counter()
    b_weights = [(p, p.detach().clone()) for n, p in model.peft_model.named_parameters() if "lora_B" in n]
    with torch.no_grad():  # B starts at zero; seeded values make the A-gradient path non-trivial
        for i, (p, _) in enumerate(b_weights):
            p.copy_(_fixed(tuple(p.shape), p.dtype, p.device, CANARY_SEED + i) * 0.01)
    if model.fused is not None:
        model.fused.refresh()
    try:
        first, second = _one_pass(model, shape, packed), _one_pass(model, shape, packed)
    finally:
        with torch.no_grad():
            for p, saved in b_weights:
                p.copy_(saved)
        if model.fused is not None:
            model.fused.refresh()
    torch.cuda.synchronize()
    differs = first_difference(first, second)
    value = {
        "passed": differs is None,
        "first_difference": differs,
        "tensors_compared": len(first),
        "scope": "fused layer 0 + loss head" if model.fused is not None else "transformers loss on one row",
        "shape": list(shape),
        "packed": packed,
        "seconds": round(time.perf_counter() - started, 3),
    }
    claim = deterministic and differs is None
    why = (
        "use_deterministic_algorithms on and the canary bitwise equal"
        if claim
        else (
            "deterministic = false in the recipe"
            if not deterministic
            else f"canary: {differs} differed between two passes"
        )
    )
    if deterministic and differs is not None:
        import sys

        print(
            f"warning: determinism canary failed at {differs}; this run is NOT claimed deterministic",
            file=sys.stderr,
            flush=True,
        )
    return {
        "determinism_canary": {"value": value, "why": "bit-exact self-test of this run's kernels before training"},
        "deterministic_claim": {"value": claim, "why": why},
    }
