"""Evaluation without sampling: mean token loss on a split, and labels scored by log-likelihood."""

from __future__ import annotations

from typing import Any

import torch

from .data import Encoded, collate, encode
from .modeling import LoraModel
from .specs import DataSpec


@torch.no_grad()
def eval_loss(model: LoraModel, examples: list[Encoded], batch_size: int, pad_id: int) -> float | None:
    """Mean next-token loss over every labelled token of `examples`, in their fixed order."""
    if not examples:
        return None
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        ids, labels = collate(examples[start : start + batch_size], pad_id)
        nll = model.sequence_nll(ids.to(model.device), labels.to(model.device))
        total += float(nll.sum())
        count += int((labels[:, 1:] != -100).sum())
    return total / max(count, 1)


@torch.no_grad()
def candidate_nll(
    model: LoraModel,
    record: dict[str, Any],
    candidates: list[str],
    *,
    data: DataSpec,
    tokenizer: Any,
    max_len: int,
    pad_id: int,
) -> list[float]:
    """Summed NLL of each candidate label as the response (its tokens and EOS), in `candidates` order."""
    options = [encode(record, data, tokenizer, max_len, True, response=c) for c in candidates]
    ids, labels = collate(options, pad_id)
    nll = model.sequence_nll(ids.to(model.device), labels.to(model.device))
    return [float(v) for v in nll.cpu()]


def pick_label(candidates: list[str], nll: list[float]) -> str:
    """The candidate with the lowest NLL; ties go to the first in sorted order."""
    return candidates[min(range(len(candidates)), key=lambda i: (nll[i], i))]


def classification_metrics(truth: list[str], predicted: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the labels seen in either list."""
    accuracy = sum(t == p for t, p in zip(truth, predicted, strict=True)) / max(len(truth), 1)
    f1s = []
    for label in sorted(set(truth) | set(predicted)):
        tp = sum(t == label and p == label for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != label and p == label for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == label and p != label for t, p in zip(truth, predicted, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": accuracy, "macro_f1": sum(f1s) / max(len(f1s), 1)}


@torch.no_grad()
def label_metrics(
    model: LoraModel,
    records: list[dict[str, Any]],
    candidates: list[str],
    *,
    data: DataSpec,
    tokenizer: Any,
    max_len: int,
    pad_id: int,
) -> dict[str, float]:
    """Accuracy and macro-F1: each record's prediction is the candidate label with the highest
    log-likelihood as the response (summed over its tokens and EOS);
    ties go to the first in sorted order."""
    truth, predicted = [], []
    for record in records:
        nll = candidate_nll(model, record, candidates, data=data, tokenizer=tokenizer, max_len=max_len, pad_id=pad_id)
        predicted.append(pick_label(candidates, nll))
        truth.append(str(record[data.label_field]))
    return classification_metrics(truth, predicted)
