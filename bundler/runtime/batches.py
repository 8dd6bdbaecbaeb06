"""The order of training: one list of micro-batches per optimizer step, padded or packed, from a seeded generator."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .data import Encoded, collate
from .packing import packed_batches


def train_batches(
    examples: list[Encoded],
    *,
    seed: int,
    batch_size: int,
    grad_accum: int,
    pad_id: int,
    packing: bool,
    max_len: int,
) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Yield one list of micro-batches per optimizer step, forever.

    Every epoch is reshuffled by one generator seeded with train.seed. With packing, micro-batches
    are (input_ids, labels, positions) of whole examples per row (packing.py).
    """
    if packing:
        yield from packed_batches(
            examples, seed=seed, batch_size=batch_size, grad_accum=grad_accum, pad_id=pad_id, max_len=max_len
        )
        return
    rng = np.random.Generator(np.random.PCG64(seed))
    pool: list[Encoded] = []
    while True:
        order = rng.permutation(len(examples))
        pool.extend(examples[i] for i in order)
        while len(pool) >= batch_size * grad_accum:
            step, pool = pool[: batch_size * grad_accum], pool[batch_size * grad_accum :]
            yield [collate(step[i : i + batch_size], pad_id) for i in range(0, len(step), batch_size)]
