"""Base model, precision and LoRA: bf16 base weights, float32 master LoRA weights, bf16 compute."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import RecipeInputError
from .loss import chunked_cross_entropy, sequence_nll
from .specs import LoraSpec, TrainSpec


def resolve_device(train: TrainSpec) -> torch.device:
    wanted = train.device
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RecipeInputError(
            "train.device = 'cuda' but no CUDA GPU is visible",
            "run with the docker runner on a GPU host, or set train.device = 'auto'",
        )
    return torch.device("cuda" if wanted != "cpu" and torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """'auto' is bf16 on CUDA and float32 on the CPU (CPU bf16 matmuls are slow and vary by ISA)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]


def load_base_model(model_dir: Path, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=dtype, attn_implementation="sdpa", local_files_only=True
    )
    return model.to(device)


def check_model_fits(model: torch.nn.Module, train: TrainSpec, lora: LoraSpec, vocab_needed: int) -> None:
    """Reject settings the model cannot take, before any training starts."""
    config = model.config
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and train.max_seq_len > limit:
        raise RecipeInputError(
            f"train.max_seq_len = {train.max_seq_len} is longer than the model allows ({limit})",
            f"set train.max_seq_len to {limit} or less",
            kind="config",
        )
    linear_names = sorted(
        {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    )
    unknown = [t for t in lora.target_modules if t not in linear_names]
    if unknown:
        raise RecipeInputError(
            f"lora.target_modules names {', '.join(map(repr, unknown))}, which the model does not have",
            f"choose from its linear layers: {', '.join(linear_names)}",
            kind="config",
        )
    if config.vocab_size < vocab_needed:
        raise RecipeInputError(
            f"the tokenizer needs {vocab_needed} ids but the model has {config.vocab_size}",
            "use a model whose vocabulary covers its tokenizer",
            kind="config",
        )


@dataclass
class LoraModel:
    """A PEFT model plus what the training step needs: decoder, frozen lm_head, compute dtype."""

    peft_model: torch.nn.Module
    compute_dtype: torch.dtype
    device: torch.device
    fused: Any = None  # a fastpath.FusedPath when the fused kernels train this model

    @property
    def base(self) -> torch.nn.Module:
        return self.peft_model.get_base_model()

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.compute_dtype)

    def hidden_states(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        decoder = getattr(self.base, self.base.base_model_prefix)
        if positions is not None:  # packed rows: each document sees only itself (data.pack_documents)
            from .fused_decoder import document_mask

            mask = document_mask(positions)[:, None]
            return decoder(
                input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False
            ).last_hidden_state
        # No attention mask: batches are right-padded and attention is causal, so real tokens never
        # see padding; a mask would push SDPA off the flash kernel.
        return decoder(input_ids=input_ids, use_cache=False).last_hidden_state

    def lm_head_weight(self) -> torch.Tensor:
        weight = self.base.get_output_embeddings().weight
        if weight.requires_grad:
            raise RecipeInputError(
                "the lm_head is trainable; the chunked loss needs it frozen",
                "leave lm_head out of lora.target_modules",
                kind="config",
            )
        return weight

    def loss(
        self, input_ids: torch.Tensor, labels: torch.Tensor, normalizer: float, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.fused is not None:
            return self.fused.loss(input_ids, labels, normalizer, positions)
        with self.autocast():
            hidden = self.hidden_states(input_ids, positions)
        return chunked_cross_entropy(hidden, self.lm_head_weight(), labels, normalizer)

    @torch.no_grad()
    def sequence_nll(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            hidden = self.hidden_states(input_ids)
        return sequence_nll(hidden, self.lm_head_weight(), labels)


def apply_lora(model: torch.nn.Module, lora: LoraSpec, *, init_seed: int, compute_dtype: torch.dtype) -> LoraModel:
    """Wrap `model` with LoRA adapters (float32 weights) initialised on the CPU from `init_seed`."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    device = next(model.parameters()).device
    peft_model = get_peft_model(model, config)  # adapters in float32 (autocast_adapter_dtype)
    generator = torch.Generator(device="cpu").manual_seed(init_seed)
    for _name, module in sorted(peft_model.named_modules(), key=lambda item: item[0]):
        if not hasattr(module, "lora_A"):
            continue
        for adapter in sorted(module.lora_A):
            a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
            # peft's default: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in));
            # drawn here on the CPU so the initial adapter does not depend on the device's RNG.
            bound = 1.0 / math.sqrt(a.shape[1])
            init = torch.empty(a.shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator)
            with torch.no_grad():
                a.copy_(init)
                b.zero_()
        # Under autocast the adapter matmuls run in bf16 on the bf16 input; peft would otherwise
        # cast every input to float32 first (a copy per layer, and float32 matmuls on FFMA units).
        module.cast_input_dtype_enabled = compute_dtype == torch.float32
    peft_model.to(device)
    return LoraModel(peft_model, compute_dtype, device)


def adapter_state(model: LoraModel) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model.peft_model)
    return {k: state[k].detach().to("cpu", torch.float32).contiguous() for k in sorted(state)}


def load_adapter(model: torch.nn.Module, adapter_dir: Path, *, compute_dtype: torch.dtype) -> LoraModel:
    """Load a saved adapter onto `model` the way users do (PeftModel.from_pretrained), set up as in
    training, and refuse one whose tensors do not all land on the model unchanged."""
    from peft import PeftModel
    from safetensors.torch import load_file

    device = next(model.parameters()).device
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecipeInputError(
            f"the adapter in {adapter_dir} does not fit the base model: {first[:300]}",
            "check the adapter against the bundle it came from: its base model, target modules and rank",
            kind="adapter",
        ) from None
    for _name, module in peft_model.named_modules():
        if hasattr(module, "lora_A"):
            # As in apply_lora: under autocast the adapter matmuls run in the compute dtype.
            module.cast_input_dtype_enabled = compute_dtype == torch.float32
    peft_model.to(device)
    peft_model.eval()
    loaded = LoraModel(peft_model, compute_dtype, device)
    saved = load_file(str(adapter_dir / "adapter_model.safetensors"))
    state = adapter_state(loaded)
    stray = sorted(set(saved) ^ set(state))
    changed = sorted(k for k in set(saved) & set(state) if not torch.equal(saved[k].float(), state[k]))
    if stray or changed:
        raise RecipeInputError(
            f"the adapter in {adapter_dir} does not fit the base model: "
            f"{len(stray)} tensor(s) without a matching layer and {len(changed)} changed on load "
            f"(first: {(stray + changed)[0]})",
            "check the adapter against the bundle it came from: its base model, target modules and rank",
            kind="adapter",
        )
    return loaded
