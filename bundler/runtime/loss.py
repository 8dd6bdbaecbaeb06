"""Cross-entropy over the vocabulary in chunks of tokens, without a float32 copy of the full logits.

At vocabulary 128256, sequence 1024 and batch 8 the full logits are 4.2 GB in float32, with as much
again for their gradient; the plain transformers loop spends about a quarter of its GPU time on
these copies (issue 6 profile). Here each chunk's logits live only inside the chunk: the forward
pass also computes the gradient with respect to the hidden states (the lm_head weight is frozen),
keeps that (tokens x hidden, small) and drops the logits. Chunks are visited in a fixed order and
summed in float32, so the result is deterministic.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
CHUNK_TOKENS = 1024


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (hidden.to(weight.dtype) @ weight.t()).float()


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        labels: torch.Tensor,  # type: ignore[override]
        scale: float,
    ) -> torch.Tensor:
        needs_grad = ctx.needs_input_grad[0]
        grad_hidden = torch.empty_like(hidden) if needs_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], CHUNK_TOKENS):
            h, y = hidden[start : start + CHUNK_TOKENS], labels[start : start + CHUNK_TOKENS]
            logits = _chunk_logits(h, weight)
            valid = y != IGNORE_INDEX
            target = y.clamp(min=0)
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, target[:, None]).squeeze(1)
            total += ((lse - picked) * valid).sum()
            if grad_hidden is not None:
                probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                rows = torch.arange(len(y), device=y.device)
                probs[rows, target] = probs[rows, target] - valid.float()
                probs.mul_((valid.float() * scale)[:, None])
                grad_hidden[start : start + CHUNK_TOKENS] = probs.to(weight.dtype) @ weight
        ctx.save_for_backward(grad_hidden if grad_hidden is not None else torch.empty(0))
        return total * scale

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        (grad_hidden,) = ctx.saved_tensors
        return (grad_hidden * grad_output).to(grad_hidden.dtype), None, None, None


def chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, normalizer: float
) -> torch.Tensor:
    """Sum of next-token cross-entropy over labelled positions, divided by `normalizer`.

    `hidden` is (batch, seq, dim) before the lm_head, `labels` (batch, seq) aligned with the inputs
    (shifted here). The lm_head `weight` must be frozen: no gradient flows to it.
    """
    shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    flat = hidden.reshape(-1, hidden.shape[-1])
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        return _ChunkedCrossEntropy.apply(flat, weight, shifted.reshape(-1), 1.0 / normalizer)


@torch.no_grad()
def sequence_nll(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row summed next-token NLL over labelled positions (for eval loss and label scoring)."""
    shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    rows = []
    for b in range(hidden.shape[0]):
        nll = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[1], CHUNK_TOKENS):
            y = shifted[b, start : start + CHUNK_TOKENS]
            logits = _chunk_logits(hidden[b, start : start + CHUNK_TOKENS], weight)
            valid = y != IGNORE_INDEX
            picked = logits.gather(1, y.clamp(min=0)[:, None]).squeeze(1)
            nll += ((torch.logsumexp(logits, dim=-1) - picked) * valid).sum()
        rows.append(nll)
    return torch.stack(rows)
