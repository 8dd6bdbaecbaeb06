"""`bundler replay`'s comparison of two runs: tolerances, fingerprints, steps, evals, adapters (pure)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from bundler.bundle.hashing import sha256_file
from bundler.errors import ToleranceError
from bundler.records import RunView, hardware_fingerprint

ADAPTER_FILE = "adapter/adapter_model.safetensors"
# Fingerprint fields that describe where a run happened but cannot change its numbers by themselves
# (the library versions and hardware they imply are compared field by field).
INFORMATIONAL_FIELDS = frozenset({"runner", "image_digest"})


@dataclass(frozen=True)
class Tolerance:
    """Bounds for EQUIVALENT: `metric` absolute on eval metrics, the others relative per step."""

    # final eval metrics within 0.1% absolute: the reproducibility practice this project serves
    metric: float = 1e-3
    # train loss: max |a-b| / max(|a|, |b|) over every compared step
    loss: float = 1e-3
    # grad norms amplify last-bit differences more than the loss does, so their bound is looser
    grad_norm: float = 1e-2

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def parse_tolerance(text: str | None) -> Tolerance:
    """Parse `metric=0.001,loss=1e-3,grad_norm=1e-2` (any subset); unset keys keep their defaults."""
    if text is None or not text.strip():
        return Tolerance()
    known = Tolerance().as_dict()
    values: dict[str, float] = {}
    for part in text.split(","):
        key, sep, raw = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ToleranceError(text, f"{part.strip()!r} is not KEY=NUMBER")
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, known, n=1)
            suggestion = f" (did you mean {close[0]!r}?)" if close else ""
            raise ToleranceError(text, f"unknown key {key!r}{suggestion}; known: {', '.join(known)}")
        try:
            value = float(raw.strip())
        except ValueError:
            raise ToleranceError(text, f"{raw.strip()!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ToleranceError(text, f"{key} must be a finite number >= 0, got {raw.strip()}")
        if key in values:
            raise ToleranceError(text, f"{key} is given twice")
        values[key] = value
    return Tolerance(**{**known, **values})


def fingerprint(env: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten env.json into the fields that decide whether bitwise reproduction is expected."""
    hardware = hardware_fingerprint(dict(env))
    gpu = env.get("gpu") or {}
    nested = ("cpu", "cuda", "torch", "transformers", "peft")  # flattened below, libraries all of them
    flat: dict[str, Any] = {k: v for k, v in hardware.items() if k not in nested}
    # the runtime records the CUDA driver API version as gpu.driver_cuda_version, not gpu.driver
    flat["driver"] = hardware.get("driver") or gpu.get("driver_cuda_version")
    flat["gpu_count"] = gpu.get("count")
    flat["world_size"] = (env.get("distributed") or {}).get("world_size", 1)  # another sum order: equivalence only
    for key, value in sorted((env.get("cpu") or {}).items()):
        flat[f"cpu.{key}"] = value
    for key, value in sorted((env.get("cuda") or {}).items()):
        flat[f"cuda.{key}"] = value
    for name, version in sorted((env.get("libraries") or {}).items()):
        flat[f"library.{name}"] = version
    for name, setting in sorted((env.get("determinism") or {}).items()):
        value = setting.get("value") if isinstance(setting, dict) else setting
        flat[f"determinism.{name}"] = value
    return flat


def fingerprint_differences(recorded: Mapping[str, Any], replay: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every field whose value differs, determinism settings first, then libraries, then hardware."""

    def order(field: str) -> tuple[int, str]:
        rank = 0 if field.startswith("determinism.") else 1 if field.startswith("library.") else 2
        return (rank, field)

    return [
        {
            "field": f,
            "recorded": recorded.get(f),
            "replay": replay.get(f),
            "affects_bitwise": f not in INFORMATIONAL_FIELDS,
        }
        for f in sorted(set(recorded) | set(replay), key=order)
        if recorded.get(f) != replay.get(f)
    ]


def _relative(a: float, b: float) -> float:
    if a == b:
        return 0.0
    scale = max(abs(a), abs(b))
    return abs(a - b) / scale if scale else math.inf


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def compare_steps(recorded: RunView, replay: RunView, upto: int, tolerance: Tolerance) -> dict[str, Any]:
    """Compare every per-step field of the first `upto` steps; find the first step outside tolerance."""
    bounds = {"loss": tolerance.loss, "grad_norm": tolerance.grad_norm, "lr": 1e-9, "tokens": 0.0}
    old, new = recorded.steps, replay.steps
    compared = [s for s in sorted(old) if s <= upto]
    fields: dict[str, dict[str, Any]] = {
        name: {
            "identical": True,
            "max_abs": 0.0,
            "max_rel": 0.0,
            "max_rel_step": None,
            "first_difference_step": None,
            "bound": bound,
        }
        for name, bound in bounds.items()
    }
    missing = [s for s in compared if s not in new]
    divergence: dict[str, Any] | None = None
    if missing:
        divergence = {
            "step": missing[0],
            "field": "missing",
            "recorded": None,
            "replay": None,
            "abs": None,
            "rel": None,
            "detail": f"{len(missing)} recorded step(s) missing from the replay, from step {missing[0]}",
        }
    for step in compared:
        if step not in new:
            continue
        for name, summary in fields.items():
            a, b = _number(old[step].get(name)), _number(new[step].get(name))
            if a is None and b is None:
                continue
            if a is None or b is None:
                rel, diff = math.inf, math.inf
            else:
                rel, diff = _relative(a, b), abs(a - b)
            if rel == 0.0:
                continue
            summary["identical"] = False
            if summary["first_difference_step"] is None:
                summary["first_difference_step"] = step
            summary["max_abs"] = max(summary["max_abs"], diff)
            if rel > summary["max_rel"]:
                summary["max_rel"], summary["max_rel_step"] = rel, step
            if rel > summary["bound"] and (divergence is None or step < divergence["step"]):
                divergence = {
                    "step": step,
                    "field": name,
                    "recorded": a,
                    "replay": b,
                    "abs": diff,
                    "rel": rel,
                    "detail": f"{name} at step {step}: recorded {a!r}, replay {b!r} "
                    f"(relative difference {rel:.3g} > bound {summary['bound']:g})",
                }
    extra = sorted(s for s in new if s > upto or s not in old)
    return {
        "compared": len(compared),
        "recorded": len(old),
        "replay": len(new),
        "missing": missing,
        "extra": extra,
        "fields": fields,
        "divergence": divergence,
    }


def compare_evals(
    recorded: RunView, replay: RunView, upto: int, tolerance: Tolerance, partial: bool
) -> list[dict[str, Any]]:
    """Eval losses at common steps, and (full replays) every final eval metric in results.json."""
    rows = []
    for step in sorted(set(recorded.evals) & set(replay.evals)):
        if step <= upto:
            rows.append(_metric_row(f"val_loss@{step}", recorded.evals[step], replay.evals[step], tolerance.metric))
    if not partial:
        old, new = recorded.results.get("eval") or {}, replay.results.get("eval") or {}
        for name in sorted(set(old) | set(new)):
            rows.append(_metric_row(name, old.get(name), new.get(name), tolerance.metric))
    return rows


def _metric_row(name: str, recorded: Any, replay: Any, bound: float) -> dict[str, Any]:
    a, b = _number(recorded), _number(replay)
    if a is None or b is None:
        same = a is None and b is None
        return {
            "name": name,
            "recorded": recorded,
            "replay": replay,
            "abs": None,
            "identical": same,
            "within": same,
            "bound": bound,
        }
    diff = abs(a - b)
    return {
        "name": name,
        "recorded": a,
        "replay": b,
        "abs": diff,
        "identical": diff == 0.0,
        "within": diff <= bound,
        "bound": bound,
    }


def compare_adapters(recorded: RunView, replay: RunView) -> dict[str, Any]:
    def file_sha(run: RunView) -> str | None:
        path = run.path / ADAPTER_FILE
        return sha256_file(path) if path.is_file() else None

    old_bytes, new_bytes = file_sha(recorded), file_sha(replay)
    old_tensor = recorded.results.get("adapter_tensor_sha256")
    new_tensor = replay.results.get("adapter_tensor_sha256")
    return {
        "compared": True,
        "recorded_sha256": old_bytes,
        "replay_sha256": new_bytes,
        "bytes_equal": old_bytes is not None and old_bytes == new_bytes,
        "recorded_tensor_sha256": old_tensor,
        "replay_tensor_sha256": new_tensor,
        "tensors_equal": old_tensor is not None and old_tensor == new_tensor,
    }
