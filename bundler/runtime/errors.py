"""Errors the runtime reports as an ERROR_PREFIX line (`BUNDLER_ERROR {json}`) with exit code 3 (contract.py)."""

from __future__ import annotations

from .contract import RUNTIME_EXIT_INPUT as EXIT_INPUT  # noqa: F401 - the name the runtime uses


class RecipeInputError(Exception):
    """A recipe, model or dataset problem found before training; `hint` is the next step."""

    def __init__(self, message: str, hint: str, kind: str = "input"):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.kind = kind

    def __str__(self) -> str:
        return self.message

    def as_event(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message, "hint": self.hint}


def out_of_memory_error(config: dict, detail: str) -> RecipeInputError:
    """Turn an out-of-memory failure into an error naming the settings to lower."""
    train, lora = config.get("train", {}), config.get("lora", {})
    batch, seq = train.get("batch_size"), train.get("max_seq_len")
    first_line = detail.strip().splitlines()[0] if detail.strip() else ""
    return RecipeInputError(
        f"out of memory during training ({first_line or 'no detail'})",
        f"lower train.batch_size (now {batch}) and raise train.grad_accum to keep the effective "
        "batch, "
        f"or lower train.max_seq_len (now {seq}) or lora.r (now {lora.get('r')}); "
        'lora.quantization = "4bit" also saves memory',
        kind="oom",
    )
