"""The fused decoder path: a Llama decoder run from the peft model's own weights, fused ops.

Same function as transformers' LlamaModel with peft's LoRA (to rounding), in fewer, larger
kernels: q/k/v and gate/up as one product each with their adapters folded in (lora_linear.py),
RMSNorm with the residual add, RoPE with the q/k/v split, SwiGLU (kernels.py), attention by
flash SDPA with grouped KV heads (no repeat_kv copies) or, for packed rows, by variable-length
flash attention over each document. Nothing here touches RNG except peft's dropout rate, drawn
from torch's seeded generator in a fixed order.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .kernels import Kernels
from .lora_linear import LoraGroup

SUPPORTED_MODEL_TYPES = ("llama",)


def unsupported_reason(model: torch.nn.Module) -> str | None:
    """Why the fused path cannot run this (peft-wrapped) model, or None when it can."""
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in SUPPORTED_MODEL_TYPES:
        return f"model_type {kind!r} (fused path: {', '.join(SUPPORTED_MODEL_TYPES)})"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "projection biases"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r}"
    if getattr(config, "pretraining_tp", 1) != 1:
        return "pretraining_tp != 1"
    return None


@dataclass
class FusedLayer:
    qkv: LoraGroup
    o: LoraGroup
    gate_up: LoraGroup
    down: LoraGroup
    norm_in: torch.Tensor
    norm_post: torch.Tensor


def _varlen() -> Any:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


class Attention:
    """Causal attention over (N, heads, D) tokens: whole rows, or documents inside packed rows."""

    def __init__(self, heads: int, kv_heads: int, device: torch.device):
        self.heads, self.kv_heads, self.device = heads, kv_heads, device
        self.varlen = _varlen() if device.type == "cuda" else None
        self.gqa_native = True
        self.choice = "flash sdpa" if device.type == "cuda" else "sdpa (cpu)"

    def describe(self) -> dict[str, Any]:
        return {
            "rows": self.choice + (", grouped kv" if self.gqa_native else ", kv expanded"),
            "packed": "flash varlen" if self.varlen else "sdpa with a block-diagonal causal mask",
        }

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: int, seq: int, positions: torch.Tensor | None
    ) -> torch.Tensor:
        if positions is None:
            out = self._rows(q, k, v, batch, seq, None)
        elif self.varlen is not None:
            out = self._varlen(q, k, v, positions, seq)
        else:
            out = self._rows(q, k, v, batch, seq, document_mask(positions))
        return out.reshape(q.shape[0], -1)

    def _rows(self, q, k, v, batch, seq, mask):  # type: ignore[no-untyped-def]
        qt, kt, vt = (t.view(batch, seq, t.shape[1], t.shape[2]).transpose(1, 2) for t in (q, k, v))
        grouped = self.heads != self.kv_heads
        if mask is not None:
            kt, vt = (
                (t.repeat_interleave(self.heads // self.kv_heads, dim=1) for t in (kt, vt)) if grouped else (kt, vt)
            )
            out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask[:, None])
            return out.transpose(1, 2)
        if self.device.type == "cuda" and self.gqa_native and grouped:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            try:
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True).transpose(1, 2)
            except RuntimeError:
                self.gqa_native = False  # this torch's flash kernel takes no grouped KV: expand them
        if grouped:
            kt, vt = (t.repeat_interleave(self.heads // self.kv_heads, dim=1) for t in (kt, vt))
        return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True).transpose(1, 2)

    def _varlen(self, q, k, v, positions, seq):  # type: ignore[no-untyped-def]
        flat = positions.reshape(-1)
        starts = torch.nonzero(flat == 0).flatten()
        cu = torch.cat([starts, starts.new_tensor([flat.numel()])]).to(torch.int32)
        params = inspect.signature(self.varlen).parameters
        kwargs: dict[str, Any] = {}
        if "is_causal" in params:
            kwargs["is_causal"] = True
        else:
            kwargs["window_size"] = (-1, 0)
        if self.heads != self.kv_heads:
            if "enable_gqa" in params:
                kwargs["enable_gqa"] = True
            else:
                k, v = (t.repeat_interleave(self.heads // self.kv_heads, dim=1) for t in (k, v))
        return self.varlen(q, k, v, cu, cu, seq, seq, **kwargs)


def document_mask(positions: torch.Tensor) -> torch.Tensor:
    """(B, S, S) bool: token i sees token j when both are in the same document and j <= i."""
    doc = torch.cumsum((positions == 0).int(), dim=1)
    seq = positions.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=positions.device).tril()
    return (doc[:, :, None] == doc[:, None, :]) & causal


class FusedDecoder:
    """Hidden states of a peft-wrapped Llama model through the fused kernels."""

    def __init__(self, peft_model: torch.nn.Module, kernels: Kernels):
        base = peft_model.get_base_model()
        self.decoder = getattr(base, base.base_model_prefix)
        config = base.config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.eps, self.inter = float(config.rms_norm_eps), config.intermediate_size
        self.kernels = kernels
        dtype = self.decoder.embed_tokens.weight.dtype
        self.layers = []
        for layer in self.decoder.layers:
            att, mlp = layer.self_attn, layer.mlp
            fuse = functools.partial(LoraGroup.build, dtype=dtype, combine=kernels.dropout_backward)
            self.layers.append(
                FusedLayer(
                    qkv=fuse([("q_proj", att.q_proj), ("k_proj", att.k_proj), ("v_proj", att.v_proj)]),
                    o=fuse([("o_proj", att.o_proj)]),
                    gate_up=fuse([("gate_proj", mlp.gate_proj), ("up_proj", mlp.up_proj)]),
                    down=fuse([("down_proj", mlp.down_proj)]),
                    norm_in=layer.input_layernorm.weight,
                    norm_post=layer.post_attention_layernorm.weight,
                )
            )
        self.attention = Attention(self.heads, self.kv_heads, self.decoder.embed_tokens.weight.device)

    def groups(self) -> list[LoraGroup]:
        return [g for layer in self.layers for g in (layer.qkv, layer.o, layer.gate_up, layer.down)]

    def refresh(self) -> None:
        """Copy the current LoRA B weights into the fused weights (after each optimizer step)."""
        for group in self.groups():
            group.refresh()

    def set_training(self, training: bool) -> None:
        for group in self.groups():
            group.training = training

    def describe(self) -> dict[str, Any]:
        first = self.layers[0]
        return {
            "groups": {
                name: {"projections": [s.name for s in g.slots], "mode": "concat" if g.concat else "addmm"}
                for name, g in (("qkv", first.qkv), ("o", first.o), ("gate_up", first.gate_up), ("down", first.down))
            },
            "attention": self.attention.describe(),
            "kernels": self.kernels.describe(),
        }

    def layer_forward(
        self,
        layer: FusedLayer,
        h: torch.Tensor,
        pending: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor],
        shape: tuple[int, int],
        positions: torch.Tensor | None,
        trace: list[tuple[str, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder layer; `pending` is the previous layer's MLP output, not yet added to h."""
        k = self.kernels
        if pending is None:
            x = k.rms_norm(h, layer.norm_in, self.eps)
        else:
            h, x = k.add_rms_norm(h, pending, layer.norm_in, self.eps)
        qkv = layer.qkv(x)
        q, kk, v = k.rope(qkv, rope[0], rope[1], self.heads, self.kv_heads)
        att = self.attention(q, kk, v, shape[0], shape[1], positions)
        o = layer.o(att)
        h, x2 = k.add_rms_norm(h, o, layer.norm_post, self.eps)
        gate_up = layer.gate_up(x2)
        act = k.swiglu(gate_up, self.inter)
        down = layer.down(act)
        if trace is not None:
            names = ("rms_norm", "qkv_lora", "rope_q", "rope_k", "attention", "o_lora", "add_rms_norm")
            trace.extend(zip(names, (x, qkv, q, kk, att, o, x2), strict=True))
            trace.extend([("gate_up_lora", gate_up), ("swiglu", act), ("down_lora", down)])
        return h, down

    def embed(
        self, input_ids: torch.Tensor, positions: torch.Tensor | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch, seq = input_ids.shape
        h = self.decoder.embed_tokens(input_ids)
        if positions is None:
            positions = torch.arange(seq, device=input_ids.device)[None].expand(batch, seq)
        cos, sin = self.decoder.rotary_emb(h, positions)
        return h.reshape(batch * seq, -1), (cos.reshape(batch * seq, -1), sin.reshape(batch * seq, -1))

    def hidden_states(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, hidden) after the final norm; `positions` restart at 0 for each packed document."""
        batch, seq = input_ids.shape
        h, rope = self.embed(input_ids, positions)
        pending = None
        for layer in self.layers:
            h, pending = self.layer_forward(layer, h, pending, rope, (batch, seq), positions)
        _, out = self.kernels.add_rms_norm(h, pending, self.decoder.norm.weight, self.eps)
        return out.view(batch, seq, -1)
