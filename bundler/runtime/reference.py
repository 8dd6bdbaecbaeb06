"""Reference outputs: what the trained adapter answers on the test split, for checks without retraining.

`reference_outputs.jsonl` holds one JSON object per line, sorted keys, no timestamps:

    {"kind": "header", "schema": "bundler.reference/1", "split", "examples", "candidates", ...}
    {"kind": "example", "id", "loglik", "tokens", "label"?, "label_scores"?, "predicted"?}   sorted by ID
    {"kind": "probe", "id", "index", "prompt_tokens", "tokens", "text", "logprobs", "margins"}
    {"kind": "summary", "mean_loglik_per_token", "accuracy"?, "macro_f1"?}

`loglik` is the summed log-probability (nats) of the reference response and EOS given the prompt;
`tokens` is how many tokens it sums over. Probes are greedy continuations (argmax, first index on a
tie) of the first PROBES prompts of the split, at most MAX_NEW_TOKENS tokens, stopping at EOS;
`margins` is the log-probability gap between the chosen token and the runner-up at each step, so a
checker can tell a near-tie flip from a real change. The same function writes the file at the end of
training (train.py) and when an adapter is checked (check.py), so the two are comparable line by line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from .data import collate, encode, example_id, render_prompt
from .evaluate import candidate_nll, classification_metrics, pick_label
from .modeling import LoraModel
from .specs import DataSpec

REFERENCE_SCHEMA = "bundler.reference/1"
REFERENCE_FILE = "reference_outputs.jsonl"
PROBES = 3
MAX_NEW_TOKENS = 16


def reference_split(splits: dict[str, list[dict]]) -> str | None:
    """The split the reference is taken over: test, or val when test is empty."""
    return next((name for name in ("test", "val") if splits.get(name)), None)


@torch.no_grad()
def greedy_continuation(
    model: LoraModel, prompt_ids: list[int], max_new_tokens: int, eos_id: int, limit: int
) -> dict[str, Any]:
    """Greedy decoding without a KV cache (a full forward per token: exact, and cheap for 16 tokens)."""
    ids = list(prompt_ids)[-max(1, limit - max_new_tokens) :]
    weight = model.lm_head_weight()
    tokens: list[int] = []
    logprobs: list[float] = []
    margins: list[float] = []
    for _ in range(max_new_tokens):
        with model.autocast():
            hidden = model.hidden_states(torch.tensor([ids], device=model.device))
        logits = (hidden[0, -1:].to(weight.dtype) @ weight.t()).float()[0]
        logp = torch.log_softmax(logits, dim=-1).cpu()
        token = int(torch.argmax(logp))  # the first maximal index on a tie
        runner_up = torch.cat([logp[:token], logp[token + 1 :]]).max()
        tokens.append(token)
        logprobs.append(float(logp[token]))
        margins.append(float(logp[token] - runner_up))
        if token == eos_id:
            break
        ids.append(token)
    return {"tokens": tokens, "logprobs": logprobs, "margins": margins}


def reference_rows(
    model: LoraModel,
    splits: dict[str, list[dict]],
    *,
    data: DataSpec,
    id_field: str | None,
    tokenizer: Any,
    max_len: int,
    batch_size: int,
) -> list[dict[str, Any]]:
    """Every line of reference_outputs.jsonl, in file order."""
    split = reference_split(splits)
    records = splits.get(split, []) if split else []
    label_field = data.label_field
    candidates = sorted({str(r[label_field]) for part in splits.values() for r in part}) if label_field else None
    limit = int(getattr(model.base.config, "max_position_embeddings", None) or max_len + MAX_NEW_TOKENS)
    header = {
        "kind": "header",
        "schema": REFERENCE_SCHEMA,
        "split": split,
        "examples": len(records),
        "candidates": candidates,
        "probes": min(PROBES, len(records)),
        "max_new_tokens": MAX_NEW_TOKENS,
        "tokenizer": tokenizer.name,
        "loglik": "summed log-probability (nats) of the reference response and EOS given the prompt",
    }
    model.peft_model.eval()
    examples: list[dict[str, Any]] = []
    encoded = [encode(r, data, tokenizer, max_len, True) for r in records]
    for start in range(0, len(records), batch_size):
        ids, labels = collate(encoded[start : start + batch_size], tokenizer.pad_token_id)
        nll = model.sequence_nll(ids.to(model.device), labels.to(model.device)).cpu()
        counts = (labels[:, 1:] != -100).sum(dim=1)
        for row, record in enumerate(records[start : start + batch_size]):
            examples.append(
                {
                    "kind": "example",
                    "id": example_id(record, id_field),
                    "loglik": -float(nll[row]),
                    "tokens": int(counts[row]),
                }
            )
    if candidates:
        for line, record in zip(examples, records, strict=True):
            nll_c = candidate_nll(
                model,
                record,
                candidates,
                data=data,
                tokenizer=tokenizer,
                max_len=max_len,
                pad_id=tokenizer.pad_token_id,
            )
            line["label"] = str(record[label_field])
            line["label_scores"] = {c: -v for c, v in zip(candidates, nll_c, strict=True)}
            line["predicted"] = pick_label(candidates, nll_c)
    probes = []
    for index, record in enumerate(records[:PROBES]):
        prompt_ids = tokenizer.encode(render_prompt(record, data), bos=True)
        continuation = greedy_continuation(model, prompt_ids, MAX_NEW_TOKENS, tokenizer.eos_token_id, limit)
        probes.append(
            {
                "kind": "probe",
                "id": example_id(record, id_field),
                "index": index,
                "prompt_tokens": len(prompt_ids),
                "text": tokenizer.decode([t for t in continuation["tokens"] if t != tokenizer.eos_token_id]),
                **continuation,
            }
        )
    summary: dict[str, Any] = {
        "kind": "summary",
        "mean_loglik_per_token": (
            sum(e["loglik"] for e in examples) / max(1, sum(e["tokens"] for e in examples)) if examples else None
        ),
    }
    if candidates and examples:
        summary.update(classification_metrics([e["label"] for e in examples], [e["predicted"] for e in examples]))
    return [header, *sorted(examples, key=lambda e: e["id"]), *probes, summary]


def write_reference(
    out: Path,
    model: LoraModel,
    splits: dict[str, list[dict]],
    *,
    data: DataSpec,
    id_field: str | None,
    tokenizer: Any,
    max_len: int,
    batch_size: int,
) -> tuple[str, float, dict[str, Any]]:
    """Write out/reference_outputs.jsonl atomically; return (its sha256, seconds spent, the summary line)."""
    import hashlib
    import os

    started = time.perf_counter()
    rows = reference_rows(
        model,
        splits,
        data=data,
        id_field=id_field,
        tokenizer=tokenizer,
        max_len=max_len,
        batch_size=batch_size,
    )
    blob = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode()
    tmp = out / f".{REFERENCE_FILE}.tmp"
    tmp.write_bytes(blob)
    os.replace(tmp, out / REFERENCE_FILE)
    return hashlib.sha256(blob).hexdigest(), time.perf_counter() - started, rows[-1]
