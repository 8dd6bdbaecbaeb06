"""`bundler replay`: run a finished bundle again, compare with a recorded run, and give a verdict.

Verdicts (schema "bundler.replay/1"):
  IDENTICAL   same adapter bytes and every compared step bitwise equal (a partial replay: the steps)
  EQUIVALENT  not bitwise equal, but every step and eval metric within tolerance
  DIVERGED    a step or metric outside tolerance; the first divergent step and its size are named

The fingerprints of both runs (env.json) say which verdict to expect: the same device, SM count,
driver, CUDA, CPU, Python, library versions and determinism settings with deterministic = true make
bitwise reproduction the expectation; anything else makes equivalence the most one may expect.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tomllib

from bundler.bundle.bag import (
    RECIPE,
    RUN_ANNOTATIONS,
    RUNS,
    bundle_id_of,
    list_runs,
    open_bundle,
    resolve_run,
    run_id_for,
)
from bundler.bundle.hashing import hash_tree, sha256_file
from bundler.bundle.verify import require_verified
from bundler.errors import InputError, ToleranceError, VerifyFailed

SCHEMA = "bundler.replay/1"
VERDICTS = ("IDENTICAL", "EQUIVALENT", "DIVERGED")
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


@dataclass
class RunRecord:
    """The files of one recorded run, read once."""

    run_id: str
    path: Path
    results: dict[str, Any]
    metrics: list[dict[str, Any]]
    env: dict[str, Any]
    record: dict[str, Any]

    @property
    def steps(self) -> dict[int, dict[str, Any]]:
        return {m["step"]: m for m in self.metrics if isinstance(m.get("step"), int) and "split" not in m}

    @property
    def evals(self) -> dict[int, float]:
        return {
            m["step"]: float(m["eval_loss"])
            for m in self.metrics
            if m.get("split") == "val" and isinstance(m.get("eval_loss"), (int, float))
        }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}", "the run is damaged; pick another with --run") from None
    return value if isinstance(value, dict) else {}


def read_run(bundle: Path, run_id: str) -> RunRecord:
    """Read a run's results.json, metrics.jsonl, env.json and run.json."""
    path = bundle / RUNS / run_id
    if not (path / "results.json").is_file():
        raise InputError(f"run {run_id[:12]} in {bundle} has no results.json", "pick a finished run with --run")
    metrics = []
    metrics_path = path / "metrics.jsonl"
    if metrics_path.is_file():
        for line in metrics_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                metrics.append(json.loads(line))
    return RunRecord(
        run_id,
        path,
        _read_json(path / "results.json"),
        metrics,
        _read_json(path / "env.json"),
        _read_json(path / "run.json"),
    )


def pick_recorded_run(bundle: Path, run_id: str | None) -> str:
    """The run asked for, else the latest full run (not a partial `--steps` replay), else the latest."""
    if run_id is not None:
        return resolve_run(bundle, run_id)
    resolve_run(bundle, None)  # raises when there is no run at all
    full = [r for r in list_runs(bundle) if not _read_json(bundle / RUNS / r / "run.json").get("max_steps_override")]
    return full[-1] if full else resolve_run(bundle, None)


def is_deterministic_run(bundle: Path, recorded: RunRecord) -> bool:
    """False when the recipe's [train] deterministic or the run's recorded determinism says so."""
    config_path = bundle / RECIPE / "config.toml"
    config = tomllib.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    flag = config.get("train", {}).get("deterministic", True)
    setting = (recorded.env.get("determinism") or {}).get("torch.use_deterministic_algorithms") or {}
    return bool(flag) and setting.get("value", True) is not False


def fingerprint(env: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten env.json into the fields that decide whether bitwise reproduction is expected."""
    from bundler.records import hardware_fingerprint

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


def run_belongs_to_bundle(bundle: Path, run: RunRecord) -> bool:
    """True when the run ID is the sha256 of this bundle's ID and the run's output manifest."""
    outputs = {p: s for p, s in hash_tree(run.path).items() if p not in RUN_ANNOTATIONS}
    return run_id_for(bundle_id_of(bundle), outputs) == run.run_id


def _relative(a: float, b: float) -> float:
    if a == b:
        return 0.0
    scale = max(abs(a), abs(b))
    return abs(a - b) / scale if scale else math.inf


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def compare_steps(recorded: RunRecord, replay: RunRecord, upto: int, tolerance: Tolerance) -> dict[str, Any]:
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
    recorded: RunRecord, replay: RunRecord, upto: int, tolerance: Tolerance, partial: bool
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


def compare_adapters(recorded: RunRecord, replay: RunRecord) -> dict[str, Any]:
    def file_sha(run: RunRecord) -> str | None:
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


def compare_runs(
    bundle: Path, recorded: RunRecord, replay: RunRecord, *, tolerance: Tolerance, steps: int | None = None
) -> dict[str, Any]:
    """Compare a replay with the recorded run and return the report (schema bundler.replay/1)."""
    recorded_steps = int(recorded.results.get("steps") or len(recorded.steps))
    partial = steps is not None and steps < recorded_steps
    upto = steps if partial and steps is not None else recorded_steps
    step_report = compare_steps(recorded, replay, upto, tolerance)
    evals = compare_evals(recorded, replay, upto, tolerance, partial)
    adapter = {"compared": False} if partial else compare_adapters(recorded, replay)

    bitwise_steps = not step_report["missing"] and all(f["identical"] for f in step_report["fields"].values())
    bitwise = bitwise_steps and all(row["identical"] for row in evals) and (partial or adapter["bytes_equal"])
    divergence = step_report["divergence"]
    eval_out = [row for row in evals if not row["within"]]
    if divergence is None and eval_out:
        row = eval_out[0]
        divergence = {
            "step": None,
            "field": f"eval.{row['name']}",
            "recorded": row["recorded"],
            "replay": row["replay"],
            "abs": row["abs"],
            "rel": None,
            "detail": f"eval metric {row['name']}: recorded {row['recorded']!r}, replay {row['replay']!r}"
            + (f" (absolute difference {row['abs']:.3g} > bound {row['bound']:g})" if row["abs"] is not None else ""),
        }
    verdict = "IDENTICAL" if bitwise else "DIVERGED" if divergence else "EQUIVALENT"

    old_print, new_print = fingerprint(recorded.env), fingerprint(replay.env)
    differences = fingerprint_differences(old_print, new_print)
    relevant = [d for d in differences if d["affects_bitwise"]]
    deterministic = is_deterministic_run(bundle, recorded)
    reasons = []
    if not deterministic:
        reasons.append(
            "the recorded run was made with deterministic = false: bitwise reproduction is not "
            "expected, only equivalence"
        )
    if relevant:
        reasons.append(
            f"{len(relevant)} fingerprint field(s) differ ({', '.join(d['field'] for d in relevant[:6])}"
            f"{', ...' if len(relevant) > 6 else ''}): only equivalence is expected"
        )
    if not reasons:
        reasons.append(
            "same device, SM count, driver, CUDA, CPU, Python, libraries and determinism settings, "
            "deterministic = true: bitwise reproduction is expected"
        )
    expected = "IDENTICAL" if deterministic and not relevant else "EQUIVALENT"
    belongs = run_belongs_to_bundle(bundle, recorded)

    causes = []
    if VERDICTS.index(verdict) > VERDICTS.index(expected):
        if not belongs:
            causes.append(
                "the recorded run's ID does not match this bundle's ID and its outputs: "
                "it was not recorded from this recipe"
            )
        if not deterministic:
            causes.append("the recorded run was made with deterministic = false")
        causes += [f"{d['field']}: recorded {d['recorded']!r}, replay {d['replay']!r}" for d in relevant]
        if not causes:
            causes.append(
                "no recorded fingerprint field differs: the runtime or its inputs behaved "
                "nondeterministically on this machine (worth a bug report)"
            )

    notes = []
    if partial:
        notes.append(
            f"partial replay: only the first {upto} of {recorded_steps} steps were run and compared "
            "(--steps); the adapter and the final eval metrics were not compared"
        )
    if replay.record.get("allow_drift") and replay.record.get("drift"):
        notes.append(
            f"the replay ran with --allow-drift: {len(replay.record['drift'])} package(s) differ "
            "from the lock (see run.json of the replay)"
        )
    if step_report["extra"] and not partial:
        notes.append(f"the replay has {len(step_report['extra'])} step(s) the recorded run does not")
    if verdict != "IDENTICAL" and VERDICTS.index(verdict) <= VERDICTS.index(expected) and expected != "IDENTICAL":
        notes.append(f"{verdict} is what the fingerprints lead one to expect")
    if VERDICTS.index(verdict) < VERDICTS.index(expected):
        notes.append(f"better than expected: {verdict} where only {expected} was expected")

    return {
        "schema": SCHEMA,
        "bundle": str(bundle),
        "bundle_id": bundle_id_of(bundle),
        "recorded_run": recorded.run_id,
        "replay_run": replay.run_id,
        "recorded_runner": recorded.record.get("runner"),
        "replay_runner": replay.record.get("runner"),
        "partial": partial,
        "steps_compared": step_report["compared"],
        "steps_recorded": recorded_steps,
        "verdict": verdict,
        "expected": expected,
        "expectation": reasons,
        "deterministic": deterministic,
        "recorded_run_matches_bundle": belongs,
        "tolerance": tolerance.as_dict(),
        "adapter": adapter,
        "steps": step_report,
        "divergence": divergence,
        "eval": evals,
        "fingerprints": {"recorded": old_print, "replay": new_print, "differences": differences},
        "causes": causes,
        "notes": notes,
        "curves": {
            "recorded": [[s, recorded.steps[s].get("loss")] for s in sorted(recorded.steps)],
            "replay": [[s, replay.steps[s].get("loss")] for s in sorted(replay.steps)],
            "recorded_eval": [[s, v] for s, v in sorted(recorded.evals.items())],
            "replay_eval": [[s, v] for s, v in sorted(replay.evals.items())],
        },
    }


def replay_bundle(
    bundle: Path,
    *,
    runner: str | None = None,
    run_id: str | None = None,
    tolerance: Tolerance | None = None,
    steps: int | None = None,
    allow_drift: bool = False,
    model_dir: Path | None = None,
    data_dir: Path | None = None,
    gpus: str | None = None,
) -> dict[str, Any]:
    """Verify the bundle, run it again into a new run directory, compare with the recorded run; return the report.

    Never runs a bundle that fails verify (InputError, exit 2). `runner` defaults to the recorded run's.
    """
    from bundler import ui
    from bundler.runners.execute import locate_inputs, run_bundle

    open_bundle(bundle)
    if steps is not None and steps < 1:
        raise InputError(
            f"--steps must be at least 1, got {steps}", "pass the number of steps to replay, e.g. --steps 5"
        )
    try:
        require_verified(bundle)
    except VerifyFailed as exc:
        raise InputError(
            str(exc), "a bundle that fails verify is never replayed; restore it from its archive"
        ) from None
    recorded = read_run(bundle, pick_recorded_run(bundle, run_id))
    runner = runner or recorded.record.get("runner") or "venv"
    recorded_steps = int(recorded.results.get("steps") or 0)
    # a recorded run that was itself partial (--steps) is replayed over the steps it has, no more
    override = recorded.record.get("max_steps_override")
    limit = steps if steps is not None else override
    if limit is not None and recorded_steps:
        limit = min(limit, recorded_steps)
    max_steps = limit if limit is not None and (limit < recorded_steps or override) else None
    ui.stage(
        f"replaying run {recorded.run_id[:12]} with the {runner} runner"
        + (f" (first {max_steps} of {recorded_steps} steps)" if max_steps else "")
    )
    model, data = locate_inputs(bundle, model_dir, data_dir, runner)
    new_id = run_bundle(
        bundle, runner=runner, model_dir=model, data_dir=data, max_steps=max_steps, allow_drift=allow_drift, gpus=gpus
    )
    replay = read_run(bundle, new_id)
    return compare_runs(bundle, recorded, replay, tolerance=tolerance or Tolerance(), steps=max_steps)
