"""Grouped LoRA linear: projections sharing an input, base and adapter in one matrix product.

peft runs each adapted projection as base(x) + B(A(dropout(x))) * scale: per projection three
extra kernels over the full output (the B product, the scale, the add) forward and as many
backward, plus two rank-r products. For q/k/v (and gate/up) here:

    u = x @ A_cat^T                      one (N, R) product, R = sum of the ranks
    y = [x | u] @ [W | s*B_blockdiag]^T   one product; the adapter rides in K (+R/d, ~1-2% FLOPs)

and backward:  [dx | du] = dy @ [W | s*B];  dB = s * dy^T u;  dA = du^T x;  dx += du @ A.

The frozen weights W live once, in the group's buffer `weight` (out, d + R); the model's own
modules keep views into it, so transformers/peft code (evaluation, generation) still sees them.
The s*B columns are refreshed from peft's float32 B before each forward (`refresh`). Gradients go
to peft's own float32 A and B parameters, so optimizer, adapter files and hashes are unchanged.
Where the input is much wider than the output (down_proj: 8192 -> 2048) the concatenation would
copy more than it saves, so y = x @ W^T then y += u @ (s*B)^T in place ("addmm" mode).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class LoraSlot:
    """One projection of a group: its rows of the output, its LoRA (or none), and its scale."""

    name: str
    out_features: int
    lora_a: torch.nn.Parameter | None = None  # (r, d) float32, peft's
    lora_b: torch.nn.Parameter | None = None  # (out, r) float32, peft's
    scale: float = 1.0
    dropout: float = 0.0

    @property
    def rank(self) -> int:
        return 0 if self.lora_a is None else self.lora_a.shape[0]


@dataclass
class LoraGroup:
    """Projections of one input fused into a single (out_total, d + R_pad) bf16 weight."""

    slots: list[LoraSlot]
    weight: torch.Tensor
    in_features: int
    concat: bool
    rank_pad: int = field(default=0)
    training: bool = True
    combine: Callable = field(default=None)  # type: ignore[assignment]  # kernels.dropout_backward
    a_cat: torch.Tensor | None = None  # (R, d) compute-dtype A rows, refreshed with B
    a_drop: torch.Tensor | None = None  # the same, times 1/(1-p): dropout's rescale folded in

    @classmethod
    def build(cls, modules: list[tuple[str, torch.nn.Module]], dtype: torch.dtype, combine: Callable) -> LoraGroup:
        """Fuse peft LoRA (or plain Linear) modules that read the same input; alias their weights."""
        slots, bases = [], []
        for name, module in modules:
            base = getattr(module, "base_layer", module)
            if base.bias is not None:
                raise ValueError(f"{name}: a bias is not supported by the fused path")
            slot = LoraSlot(name, base.out_features)
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                slot.lora_a = module.lora_A["default"].weight
                slot.lora_b = module.lora_B["default"].weight
                slot.scale = float(module.scaling["default"])
                drop = module.lora_dropout["default"]
                slot.dropout = float(getattr(drop, "p", 0.0))
            slots.append(slot)
            bases.append(base)
        lora = [s for s in slots if s.lora_a is not None]
        if len({(s.rank, s.dropout) for s in lora}) > 1:
            raise ValueError("projections of one input with different LoRA ranks or dropout")
        d = bases[0].in_features
        rank = sum(s.rank for s in slots)
        rank_pad = -(-rank // 8) * 8  # rows of 16 bytes keep cuBLAS on its aligned kernels
        out_total = sum(s.out_features for s in slots)
        device = bases[0].weight.device
        weight = torch.zeros(out_total, d + rank_pad, dtype=dtype, device=device)
        row = 0
        for base in bases:
            with torch.no_grad():
                weight[row : row + base.out_features, :d].copy_(base.weight)
            base.weight.data = weight[row : row + base.out_features, :d]  # one copy of W, shared
            row += base.out_features
        concat = d <= 2 * out_total
        group = cls(slots, weight, d, concat, rank_pad, combine=combine)
        group.refresh()
        return group

    @property
    def lora(self) -> list[LoraSlot]:
        return [s for s in self.slots if s.lora_a is not None]

    @property
    def dropout(self) -> float:
        return self.lora[0].dropout if self.lora and self.training else 0.0

    def params(self) -> list[torch.nn.Parameter]:
        return [p for s in self.lora for p in (s.lora_a, s.lora_b)]  # type: ignore[misc]

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy s*B into the weight's adapter columns and cache A in the compute dtype; call after
        every optimizer step (fastpath registers it as the optimizer's step hook)."""
        d, row, col = self.in_features, 0, 0
        for s in self.slots:
            if s.lora_b is not None:
                block = self.weight[row : row + s.out_features, d + col : d + col + s.rank]
                block.copy_(s.lora_b.detach() * s.scale)
                col += s.rank
            row += s.out_features
        if self.lora:
            a = torch.cat([s.lora_a.detach() for s in self.lora])  # type: ignore[union-attr]
            self.a_cat = a.to(self.weight.dtype)
            p = self.lora[0].dropout
            self.a_drop = (a * (1.0 / (1.0 - p))).to(self.weight.dtype) if p else self.a_cat

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _GroupedLora.apply(x, self, *self.params())


class _GroupedLora(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group: LoraGroup, *params: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        d, pad, n = group.in_features, group.rank_pad, x.shape[0]
        lora, p = group.lora, group.dropout
        mask = None
        if not lora:
            u = x.new_zeros(n, pad)
        elif p:
            # peft draws an independent mask per projection; here all of a group's masks come from
            # one call, (k, N, d), and one batched product. Masks are kept (exact 0/1 in the
            # compute dtype) and x * mask recomputed in backward: a zero of x is not a dropped one.
            k, r = len(lora), lora[0].rank
            mask = torch.empty((k, *x.shape), dtype=x.dtype, device=x.device).bernoulli_(1.0 - p)
            u3 = torch.bmm(x * mask, group.a_drop.view(k, r, d).transpose(1, 2))  # type: ignore[union-attr]
            u = u3.permute(1, 0, 2).reshape(n, k * r)
        else:
            u = x @ group.a_cat.t()  # type: ignore[union-attr]
        if pad > u.shape[1]:
            u = torch.nn.functional.pad(u, (0, pad - u.shape[1]))
        if group.concat:
            y = torch.cat([x, u], dim=1) @ group.weight.t()
        else:
            y = x @ group.weight[:, :d].t()
            if lora:
                y.addmm_(u, group.weight[:, d:].t())
        ctx.group, ctx.p = group, p
        ctx.save_for_backward(x, u, *([] if mask is None else [mask]))
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # type: ignore[override]
        group: LoraGroup = ctx.group
        x, u, *saved = ctx.saved_tensors
        d, n, p = group.in_features, x.shape[0], ctx.p
        dy = dy.contiguous()
        if group.concat:
            dxc = dy @ group.weight
            dx, du = dxc[:, :d], dxc[:, d:]
        else:
            dx, du = dy @ group.weight[:, :d], dy @ group.weight[:, d:]
        lora = group.lora
        if not lora:
            return (dx.contiguous(), None)
        k, r = len(lora), lora[0].rank
        g_b = dy.t() @ u  # (out_total, R_pad): the diagonal blocks are the B gradients
        if p:
            (mask,) = saved
            du3 = du[:, : k * r].view(n, k, r).permute(1, 0, 2)  # (k, N, r), strided
            g_a = torch.bmm(du3.transpose(1, 2), x * mask).reshape(k * r, d).float() * (1.0 / (1.0 - p))
            back = torch.bmm(du3, group.a_drop.view(k, r, d))  # type: ignore[union-attr]
            dx = group.combine(dx, back, mask)  # dx + sum_i back_i * mask_i, one kernel
        else:
            g_a = du[:, : k * r].t() @ x
            dx = torch.addmm(dx, du[:, : k * r], group.a_cat)
        grads: list[torch.Tensor] = []
        row, col = 0, 0
        for s in group.slots:
            if s.lora_a is not None:
                grads.append(g_a[col : col + s.rank].float())
                grads.append(g_b[row : row + s.out_features, col : col + s.rank].float() * s.scale)
                col += s.rank
            row += s.out_features
        return (dx, None, *grads)
