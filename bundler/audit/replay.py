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

from pathlib import Path
from typing import Any

from bundler import ui
from bundler.audit.runcompare import (
    Tolerance,
    compare_adapters,
    compare_evals,
    compare_steps,
    fingerprint,
    fingerprint_differences,
)
from bundler.bundle.bag import (
    RUN_ANNOTATIONS,
    RUNS,
    bundle_id_of,
    list_runs,
    open_bundle,
    resolve_run,
    run_id_for,
)
from bundler.bundle.hashing import hash_tree
from bundler.bundle.verify import require_verified
from bundler.errors import InputError, VerifyFailed
from bundler.records import RecipeView, RunView, read_run, read_run_json
from bundler.runners.execute import locate_inputs, run_bundle

__all__ = ["SCHEMA", "Tolerance", "compare_runs", "pick_recorded_run", "read_run", "replay_bundle"]

SCHEMA = "bundler.replay/1"
VERDICTS = ("IDENTICAL", "EQUIVALENT", "DIVERGED")


def pick_recorded_run(bundle: Path, run_id: str | None) -> str:
    """The run asked for, else the latest full run (not a partial `--steps` replay), else the latest."""
    if run_id is not None:
        return resolve_run(bundle, run_id)
    resolve_run(bundle, None)  # raises when there is no run at all
    full = [r for r in list_runs(bundle) if not read_run_json(bundle / RUNS / r / "run.json").get("max_steps_override")]
    return full[-1] if full else resolve_run(bundle, None)


def is_deterministic_run(bundle: Path, recorded: RunView) -> bool:
    """False when the recipe's [train] deterministic or the run's recorded determinism says so."""
    flag = RecipeView.of(bundle).deterministic
    setting = (recorded.env.get("determinism") or {}).get("torch.use_deterministic_algorithms") or {}
    return bool(flag) and setting.get("value", True) is not False


def run_belongs_to_bundle(bundle: Path, run: RunView) -> bool:
    """True when the run ID is the sha256 of this bundle's ID and the run's output manifest."""
    outputs = {p: s for p, s in hash_tree(run.path).items() if p not in RUN_ANNOTATIONS}
    return run_id_for(bundle_id_of(bundle), outputs) == run.run_id


def compare_runs(
    bundle: Path, recorded: RunView, replay: RunView, *, tolerance: Tolerance, steps: int | None = None
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
