"""Deterministic packing of whole examples into fixed-length rows, each attending only to itself.

Padding each batch to its longest example wastes the rest: with instruction-tuning lengths
(50-1024 tokens) about half of every batch is padding. Packing fills rows of max_len tokens with
whole examples, first fit in the seeded epoch order (no sorting, so the order stays the seed's).
Each example restarts its positions at 0 (RoPE sees the same positions as unpacked), its first
label is masked (no example learns to predict the next one's BOS), and attention is per document
(fused_decoder.Attention: flash varlen on CUDA, a block-diagonal causal mask elsewhere). So a
packed example's loss terms are those of the same example unpacked, up to rounding; the loss curve
differs only because a step now holds more examples.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .data import IGNORE_INDEX, Encoded

PackedBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
OPEN_ROWS = 64  # rows kept open for first fit; bounds the search per example


def pack_documents(examples: list[Encoded], max_len: int) -> list[list[Encoded]]:
    """Rows of whole examples (each row <= max_len tokens), first fit in the given order.

    Rows close in order of their first example: the output order depends only on the input order.
    """
    rows: list[list[Encoded]] = []
    free: list[int] = []
    done: list[list[Encoded]] = []
    for example in examples:
        size = min(len(example.input_ids), max_len)
        slot = next((i for i, room in enumerate(free) if room >= size), None)
        if slot is None:
            if len(rows) == OPEN_ROWS:
                done.append(rows.pop(0))
                free.pop(0)
            rows.append([])
            free.append(max_len)
            slot = len(rows) - 1
        rows[slot].append(example)
        free[slot] -= size
    return done + rows


def collate_packed(rows: list[list[Encoded]], pad_id: int, max_len: int) -> PackedBatch:
    """(input_ids, labels, positions), each (len(rows), max_len); padding is its own segment."""
    ids = torch.full((len(rows), max_len), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), max_len), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), max_len), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for example in row:
            n = min(len(example.input_ids), max_len)
            ids[r, at : at + n] = torch.tensor(example.input_ids[:n])
            labels[r, at : at + n] = torch.tensor(example.labels[:n])
            labels[r, at] = IGNORE_INDEX  # never a target of the previous example's last token
            positions[r, at : at + n] = torch.arange(n)
            at += n
        positions[r, at:] = torch.arange(max_len - at)
    return ids, labels, positions


def packed_batches(
    examples: list[Encoded], *, seed: int, batch_size: int, grad_accum: int, pad_id: int, max_len: int
) -> Iterator[list[PackedBatch]]:
    """As batches.train_batches, over packed rows: batch_size rows per micro-batch, forever."""
    rng = np.random.Generator(np.random.PCG64(seed))
    pool: list[list[Encoded]] = []
    per_step = batch_size * grad_accum
    while True:
        order = rng.permutation(len(examples))
        pool.extend(pack_documents([examples[i] for i in order], max_len))
        while len(pool) >= per_step:
            step, pool = pool[:per_step], pool[per_step:]
            yield [collate_packed(step[i : i + batch_size], pad_id, max_len) for i in range(0, per_step, batch_size)]
