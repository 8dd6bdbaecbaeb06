"""Training compute and energy, estimated from what the run recorded, with the formula and assumption stated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Board power (W) by GPU model: the vendors' datasheet maximum (TDP/TGP). Matched by substring of the
# name torch reports (env.json gpu.name); the first match wins, so specific names come first.
GPU_BOARD_POWER_W = (
    ("H200", 700),
    ("H100 PCIe", 350),
    ("H100", 700),
    ("A100-PCIE", 300),
    ("A100 PCIe", 300),
    ("A100", 400),
    ("L40S", 350),
    ("L40", 300),
    ("L4", 72),
    ("A10G", 300),
    ("A10", 150),
    ("T4", 70),
    ("V100", 300),
    ("RTX 4090", 450),
)
COMPUTE_FORMULA = "C = T x (4 x N_base + 6 x N_adapter + 12 x L x S x H)"
COMPUTE_TERMS = (
    "T = tokens trained (results.json tokens); N_base = base model parameters; N_adapter = LoRA parameters; "
    "L, H = layers and hidden size; S = max_seq_len (an upper bound on the attended length). Frozen weights "
    "cost a forward and an input-gradient pass (2 + 2 FLOPs per parameter and token) and no weight gradient; "
    "the adapter's weights cost 6; attention adds 12 x L x S x H per token. Evaluation is not counted."
)
ENERGY_FORMULA = "E = t_train x P_board x n_devices"
ENERGY_ASSUMPTION = (
    "every device draws its datasheet board power for the whole recorded training time: an upper bound "
    "that ignores the host, cooling (PUE) and idle phases"
)


@dataclass(frozen=True)
class ComputeEstimate:
    flops: float | None
    inputs: dict[str, Any]
    formula: str = COMPUTE_FORMULA
    terms: str = COMPUTE_TERMS


@dataclass(frozen=True)
class EnergyEstimate:
    kwh: float | None
    inputs: dict[str, Any]
    reason: str = ""
    formula: str = ENERGY_FORMULA
    assumption: str = ENERGY_ASSUMPTION


def estimate_compute(
    tokens: int | None, base_params: int | None, adapter_params: int | None, arch: dict[str, Any], seq: int | None
) -> ComputeEstimate:
    """FLOPs of training by COMPUTE_FORMULA; None when a term is not recorded."""
    layers, hidden = arch.get("num_hidden_layers"), arch.get("hidden_size")
    inputs = {
        "T": tokens,
        "N_base": base_params,
        "N_adapter": adapter_params,
        "L": layers,
        "S": seq,
        "H": hidden,
    }
    if any(not isinstance(v, int) for v in inputs.values()):
        return ComputeEstimate(None, inputs)
    flops = float(tokens) * (4 * base_params + 6 * adapter_params + 12 * layers * seq * hidden)  # type: ignore[operator]
    return ComputeEstimate(flops, inputs)


def board_power(gpu_name: str) -> int | None:
    for needle, watts in GPU_BOARD_POWER_W:
        if needle.lower() in gpu_name.lower():
            return watts
    return None


def estimate_energy(env: dict[str, Any], train_seconds: float | None, world_size: int | None) -> EnergyEstimate:
    """kWh by ENERGY_FORMULA from the recorded GPU model; None (with the reason) when it cannot be estimated."""
    gpu = env.get("gpu") if isinstance(env.get("gpu"), dict) else {}
    name = str(gpu.get("name") or "")
    devices = world_size if isinstance(world_size, int) and world_size > 0 else int(gpu.get("count") or 1)
    inputs: dict[str, Any] = {"t_train_s": train_seconds, "gpu": name or None, "n_devices": devices}
    if not name:
        return EnergyEstimate(None, inputs, "the run recorded no GPU; bundler keeps no power figure for CPUs")
    watts = board_power(name)
    inputs["P_board_W"] = watts
    if watts is None:
        return EnergyEstimate(None, inputs, f"no board power is known for {name}")
    if not isinstance(train_seconds, (int, float)):
        return EnergyEstimate(None, inputs, "the run recorded no training time")
    return EnergyEstimate(round(train_seconds * watts * devices / 3.6e6, 6), inputs)
