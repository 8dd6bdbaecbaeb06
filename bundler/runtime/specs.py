"""The resolved config's [train], [lora] and [data] as frozen specs, every key required.

`bundler build` writes config.toml with every default filled in (recipe/config.py is the one place
defaults live), so the runtime restates none: a key missing here is an input error that names it.
Keys whose value is None are left out of TOML, so the few that may be None are listed as OPTIONAL.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .errors import RecipeInputError

# Keys the resolved config omits when they are None ("no such field").
OPTIONAL = {"data": {"id_field", "label_field", "date_field", "revision"}}


def _section(config: dict[str, Any], name: str, spec: type) -> dict[str, Any]:
    table = config.get(name)
    if not isinstance(table, dict):
        raise RecipeInputError(
            f"config.toml has no [{name}] table",
            "the recipe was not written by `bundler build`; rebuild the bundle",
            kind="config",
        )
    values = {}
    for item in fields(spec):
        if item.name in table:
            values[item.name] = table[item.name]
        elif item.name in OPTIONAL.get(name, set()):
            values[item.name] = None
        else:
            raise RecipeInputError(
                f"config.toml has no {name}.{item.name}",
                "the resolved config names every key; rebuild the bundle with the bundler that wrote this runtime",
                kind="config",
            )
    return values


@dataclass(frozen=True)
class TrainSpec:
    seed: int
    max_steps: int
    batch_size: int
    grad_accum: int
    learning_rate: float
    scheduler: str
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    max_seq_len: int
    loss_on_response_only: bool
    packing: bool
    eval_every: int
    device: str
    precision: str
    deterministic: bool
    num_processes: int

    @classmethod
    def of(cls, config: dict[str, Any]) -> TrainSpec:
        return cls(**_section(config, "train", cls))


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]
    init_seed: int
    quantization: str

    @classmethod
    def of(cls, config: dict[str, Any]) -> LoraSpec:
        values = _section(config, "lora", cls)
        return cls(**{**values, "target_modules": tuple(values["target_modules"])})


@dataclass(frozen=True)
class DataSpec:
    format: str
    id_field: str | None
    prompt_field: str
    response_field: str
    label_field: str | None
    date_field: str | None
    prompt_template: str

    @classmethod
    def of(cls, config: dict[str, Any]) -> DataSpec:
        return cls(**_section(config, "data", cls))
