"""The training step and loop: seeded batches in; metrics, results, adapter, env out."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import RESULTS_SCHEMA, distributed
from .batches import train_batches
from .canary import run_canary
from .contract import EVENT_PREFIX
from .data import IGNORE_INDEX, check_fields, encode, load_splits, load_tokenizer
from .determinism import configure_determinism
from .envinfo import capture_environment
from .errors import RecipeInputError
from .evaluate import eval_loss, label_metrics
from .fastpath import enable_fused_path
from .modeling import (
    LoraModel,
    adapter_state,
    apply_lora,
    check_model_fits,
    load_base_model,
    resolve_device,
    resolve_precision,
)
from .quant import check_quantization, is_4bit, load_4bit_model, quantization_settings
from .recipe import Recipe, verify_files
from .reference import write_reference
from .specs import TrainSpec
from .tracking import start_tracker

MicroBatch = tuple[torch.Tensor, ...]  # input_ids, labels[, positions when packed]


@dataclass(frozen=True)
class StepStats:
    loss: float
    grad_norm: float
    lr: float
    tokens: int


def lr_factor(step: int, *, warmup: int, total: int, scheduler: str) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if scheduler == "linear":
        return 1.0 - progress
    if scheduler == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def make_optimizer(model: LoraModel, train: TrainSpec) -> tuple[torch.optim.Optimizer, Any]:
    params = [p for _, p in sorted(model.peft_model.named_parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=train.learning_rate,
        weight_decay=train.weight_decay,
        fused=model.device.type == "cuda",
    )  # fused: one elementwise kernel, deterministic
    total = train.max_steps
    warmup = train.warmup_steps
    kind = train.scheduler
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup=warmup, total=total, scheduler=kind)
    )
    return optimizer, scheduler


def train_step(
    model: LoraModel,
    micro_batches: list[MicroBatch],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    max_grad_norm: float,
) -> StepStats:
    """One optimizer step over `micro_batches` (gradient accumulation).

    The loss is averaged over every labelled token of all micro-batches.
    """
    normalizer = float(sum(int((batch[1][:, 1:] != IGNORE_INDEX).sum()) for batch in micro_batches))
    micro_batches = distributed.rank_slice(micro_batches)  # global normalizer, this rank's rows
    lr = optimizer.param_groups[0]["lr"]
    total = torch.zeros((), dtype=torch.float32, device=model.device)
    tokens = 0
    for input_ids, labels, *packed in micro_batches:
        input_ids = input_ids.to(model.device, non_blocking=True)
        labels = labels.to(model.device, non_blocking=True)
        positions = packed[0].to(model.device, non_blocking=True) if packed else None
        loss = model.loss(input_ids, labels, max(normalizer, 1.0), positions)
        loss.backward()
        total += loss.detach()
        tokens += input_ids.numel()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    total, tokens = distributed.sum_across_ranks(params, total, tokens)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepStats(float(total), float(grad_norm), lr, tokens)


def emit(event: dict[str, Any]) -> None:
    if not distributed.is_main_process():
        return
    print(EVENT_PREFIX + json.dumps(event, sort_keys=True), flush=True)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def tensor_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over sorted (name, dtype, shape, bytes): independent of the file format's metadata."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name]
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def save_adapter(model: LoraModel, out: Path, recipe: Recipe) -> tuple[str, str]:
    """Write adapter/ (safetensors + adapter_config.json); return (file sha256, tensor sha256)."""
    from safetensors.torch import save

    state = adapter_state(model)
    adapter = out / "adapter"
    adapter.mkdir(parents=True, exist_ok=True)
    blob = save(state, metadata={"format": "pt"})
    write_atomic(adapter / "adapter_model.safetensors", blob)
    config = model.peft_model.peft_config["default"].to_dict()
    # Record the Hub ID, never the local mount path (which differs per machine).
    config.update(base_model_name_or_path=recipe.model.get("id"), revision=recipe.model.get("revision"))
    text = json.dumps(
        config,
        sort_keys=True,
        indent=2,
        default=lambda v: sorted(v) if isinstance(v, set) else str(v),
    )
    write_atomic(adapter / "adapter_config.json", (text + "\n").encode())
    return hashlib.sha256(blob).hexdigest(), tensor_hash(state)


def run_training(
    recipe: Recipe,
    *,
    model_dir: Path,
    data_dir: Path,
    out: Path,
    runner: str,
    image_digest: str,
    max_steps: int | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Verify inputs, train, evaluate, write the outputs into `out`; return results.json."""
    train, lora, data = recipe.train, recipe.lora, recipe.data
    verify_files("model", model_dir, recipe.model.get("files", {}))
    verify_files("dataset", data_dir, recipe.dataset.get("files", {}))
    device = resolve_device(train)
    seed = train.seed
    distributed.start_world(train, device, seed)
    out = distributed.rank_output_dir(out)
    determinism = configure_determinism(seed, deterministic=train.deterministic, device=device)
    check_quantization(lora, device)
    tracker = start_tracker(recipe.config)

    splits = load_splits(data_dir, recipe.dataset, recipe.splits)
    check_fields(splits, data)
    if not splits.get("train"):
        raise RecipeInputError("the train split is empty", "check [split] ratios and the dataset", kind="data")
    tokenizer = load_tokenizer(model_dir)
    max_len = train.max_seq_len
    response_only = train.loss_on_response_only
    encoded = {
        name: [encode(r, data, tokenizer, max_len, response_only) for r in records] for name, records in splits.items()
    }

    dtype = resolve_precision(train.precision, device)
    base = (load_4bit_model if is_4bit(lora) else load_base_model)(model_dir, dtype, device)
    determinism.update(quantization_settings(lora, dtype))
    check_model_fits(base, train, lora, tokenizer.vocab_size)
    architecture = base_architecture(base)
    model = apply_lora(base, lora, init_seed=lora.init_seed, compute_dtype=dtype)
    parameters = parameter_counts(model.peft_model)
    candidates = (
        sorted({str(r[data.label_field]) for part in splits.values() for r in part})
        if (data.label_field and splits.get("test"))
        else None
    )
    base_metrics = None
    if candidates:
        # The base model's scores with the same label scoring and validation loss the adapter gets:
        # the adapter disabled, nothing trained yet, no RNG drawn (eval mode, no grad).
        model.peft_model.eval()
        with model.peft_model.disable_adapter():
            base_metrics = label_metrics(
                model,
                splits["test"],
                candidates,
                data=data,
                tokenizer=tokenizer,
                max_len=max_len,
                pad_id=tokenizer.pad_token_id,
            )
            base_metrics["val_loss"] = eval_loss(
                model, encoded.get("val", []), train.batch_size, tokenizer.pad_token_id
            )
        log(f"base model, before training: test accuracy {base_metrics['accuracy']:.4f}")
    optimizer, scheduler = make_optimizer(model, train)
    deterministic = train.deterministic
    determinism.update(enable_fused_path(model, optimizer, deterministic=deterministic, quantized=is_4bit(lora)))
    total_steps = train.max_steps
    steps = min(total_steps, max_steps) if max_steps else total_steps
    batch_size, eval_every = train.batch_size, train.eval_every
    batches = train_batches(
        encoded["train"],
        seed=seed,
        batch_size=batch_size,
        grad_accum=train.grad_accum,
        pad_id=tokenizer.pad_token_id,
        packing=train.packing,
        max_len=max_len,
    )
    distributed.seed_rank(determinism)
    packed = train.packing
    determinism.update(run_canary(model, shape=(batch_size, max_len), deterministic=deterministic, packed=packed))
    log(f"training {steps} steps on {device} ({dtype}), {len(encoded['train'])} train examples")

    out.mkdir(parents=True, exist_ok=True)
    tokens_total, last, val_loss = 0, None, None
    started = time.perf_counter()
    with open(out / "metrics.jsonl", "w", encoding="utf-8", newline="\n") as metrics:
        model.peft_model.train()
        for step in range(1, steps + 1):
            t0 = time.perf_counter()
            last = train_step(model, next(batches), optimizer, scheduler, train.max_grad_norm)
            tokens_total += last.tokens
            line = {
                "step": step,
                "loss": last.loss,
                "grad_norm": last.grad_norm,
                "lr": last.lr,
                "tokens": last.tokens,
                "step_time": round(time.perf_counter() - t0, 6),
            }
            metrics.write(json.dumps(line, sort_keys=True) + "\n")
            tracker.log(line)
            emit({"event": "step", "step": step, "max_steps": steps, "loss": last.loss})
            if on_step:
                on_step(line)
            if step % eval_every == 0 or step == steps:
                model.peft_model.eval()
                val_loss = eval_loss(model, encoded.get("val", []), batch_size, tokenizer.pad_token_id)
                model.peft_model.train()
                if val_loss is not None:
                    metrics.write(
                        json.dumps({"step": step, "split": "val", "eval_loss": val_loss}, sort_keys=True) + "\n"
                    )
                    emit({"event": "eval", "step": step, "split": "val", "eval_loss": val_loss})
                    tracker.log({"step": step, "split": "val", "eval_loss": val_loss})
            metrics.flush()
    train_seconds = time.perf_counter() - started

    model.peft_model.eval()
    evaluation: dict[str, Any] = {
        "val_loss": val_loss,
        "test_loss": eval_loss(model, encoded.get("test", []), batch_size, tokenizer.pad_token_id),
    }
    adapter_sha, tensor_sha = save_adapter(model, out, recipe)
    reference_sha, reference_seconds, reference_summary = write_reference(
        out,
        model,
        splits,
        data=data,
        id_field=recipe.splits.get("id_field"),
        tokenizer=tokenizer,
        max_len=max_len,
        batch_size=batch_size,
    )
    if candidates:
        # The reference outputs score every candidate label of the test split with label_metrics' own
        # functions (candidate_nll, pick_label, classification_metrics); scoring them again costs as much.
        evaluation.update({k: reference_summary[k] for k in ("accuracy", "macro_f1")})
        evaluation["base"] = base_metrics
    results = {
        "schema": RESULTS_SCHEMA,
        "adapter_sha256": adapter_sha,
        "adapter_tensor_sha256": tensor_sha,
        "steps": steps,
        "final_train_loss": last.loss if last else None,
        "eval": evaluation,
        "tokens": tokens_total,
        "train_seconds": round(train_seconds, 3),
        "reference_outputs_sha256": reference_sha,
        "reference_seconds": round(reference_seconds, 3),
        "tokenizer": tokenizer.name,
        "precision": str(dtype).removeprefix("torch."),
        "device": device.type,
        "quantization": lora.quantization,
        "parameters": parameters,
        "architecture": architecture,
        **distributed.results_fields(),
    }
    write_atomic(out / "results.json", canonical(results).encode())
    write_atomic(out / "env.json", canonical(capture_environment(runner, image_digest, determinism)).encode())
    tracker.finish(results)
    emit({"event": "done", "adapter_sha256": adapter_sha})
    return results


# The base model's shape, for documentation that must state it (bundler compliance: Annex XI 1(d)).
ARCHITECTURE_KEYS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "tie_word_embeddings",
)


def base_architecture(base: Any) -> dict[str, Any]:
    """The base model config's shape fields that are present (a 4-bit model reports the same config)."""
    config = base.config.to_dict()
    return {k: config[k] for k in ARCHITECTURE_KEYS if config.get(k) is not None}


def parameter_counts(peft_model: Any) -> dict[str, int]:
    """Frozen (base) and trainable (adapter) parameter counts; a 4-bit base counts packed elements."""
    frozen = trainable = 0
    for _, param in peft_model.named_parameters():
        if param.requires_grad:
            trainable += param.numel()
        else:
            frozen += param.numel()
    return {"base": frozen, "trainable": trainable}
