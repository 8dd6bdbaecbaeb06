"""`bundler check`'s comparison of two reference_outputs.jsonl files: pure, no files, no processes.

Verdicts: IDENTICAL (every number equal), EQUIVALENT (within `Tolerances`), DIVERGED.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bundler.errors import InputError

IDENTICAL, EQUIVALENT, DIVERGED = "IDENTICAL", "EQUIVALENT", "DIVERGED"
WORST_SHOWN = 5
SAMPLE_SHOWN = 5


@dataclass(frozen=True)
class Tolerances:
    """What EQUIVALENT allows.

    metric_abs: absolute change of the task metric (accuracy and macro-F1; 0.001 = 0.1 points of %).
    loglik_per_token: per-example bound on the summed log-likelihood, in nats per scored token
    (float32 on one machine differs by ~1e-6; bf16 kernels across GPU models by up to ~1e-3).
    A probe's greedy continuation may branch only where the reference's top-2 margin was within
    the same per-token bound (a near-tie).
    """

    metric_abs: float = 1e-3
    loglik_per_token: float = 1e-3

    def as_dict(self) -> dict[str, float]:
        return {"metric_abs": self.metric_abs, "loglik_per_token": self.loglik_per_token}


@dataclass
class ReferenceOutputs:
    """reference_outputs.jsonl parsed: header, examples by ID, probes in order, summary."""

    header: dict[str, Any]
    examples: dict[str, dict[str, Any]]
    probes: list[dict[str, Any]]
    summary: dict[str, Any]

    @classmethod
    def parse(cls, text: str, source: str) -> ReferenceOutputs:
        header: dict[str, Any] = {}
        summary: dict[str, Any] = {}
        examples: dict[str, dict[str, Any]] = {}
        probes: list[dict[str, Any]] = []
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                row = json.loads(line)
                kind = row["kind"]
            except (ValueError, KeyError, TypeError):
                raise InputError(
                    f"{source} line {number} is not a reference record",
                    "the file was damaged; `bundler verify` names changed files",
                ) from None
            if kind == "header":
                header = row
            elif kind == "summary":
                summary = row
            elif kind == "example":
                examples[str(row["id"])] = row
            elif kind == "probe":
                probes.append(row)
        return cls(header, examples, probes, summary)


@dataclass
class Comparison:
    """The verdict and the evidence for it."""

    verdict: str
    examples: int
    max_abs_loglik_delta: float
    over_bound: int
    label_flips: int
    metrics: dict[str, dict[str, float | None]]
    probes: list[dict[str, Any]]
    worst: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)
    flipped: list[dict[str, Any]] = field(default_factory=list)  # every example whose predicted label changed
    sample: list[dict[str, Any]] = field(default_factory=list)  # the first SAMPLE_SHOWN examples by ID, side by side

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "examples": self.examples,
            "max_abs_loglik_delta": self.max_abs_loglik_delta,
            "over_bound": self.over_bound,
            "label_flips": self.label_flips,
            "metrics": self.metrics,
            "probes": self.probes,
            "worst": self.worst,
            "problems": self.problems,
            "flipped": self.flipped,
            "sample": self.sample,
        }


def _probe_difference(ref: dict[str, Any], got: dict[str, Any], tol: Tolerances) -> dict[str, Any]:
    """Where two greedy continuations part, and whether the reference was at a near-tie there."""
    ref_tokens, got_tokens = ref.get("tokens", []), got.get("tokens", [])
    common = next(
        (i for i, (a, b) in enumerate(zip(ref_tokens, got_tokens, strict=False)) if a != b),
        min(len(ref_tokens), len(got_tokens)),
    )
    ref_lp, got_lp = ref.get("logprobs", [])[:common], got.get("logprobs", [])[:common]
    deltas = [abs(a - b) for a, b in zip(ref_lp, got_lp, strict=False)]
    same_tokens = ref_tokens == got_tokens
    margins = ref.get("margins") or []
    margin = margins[common] if common < min(len(ref_tokens), len(margins)) else None
    near_tie = not same_tokens and margin is not None and margin <= 2 * tol.loglik_per_token
    return {
        "id": ref.get("id"),
        "identical": ref == got,
        "same_tokens": same_tokens,
        "first_difference": None if same_tokens else common,
        "near_tie": near_tie,
        "reference_margin": margin,
        "max_abs_logprob_delta": max(deltas, default=0.0),
        "ok": (same_tokens or near_tie) and all(d <= tol.loglik_per_token for d in deltas),
        "reference_text": ref.get("text"),
        "check_text": got.get("text"),
    }


def compare_reference(reference: ReferenceOutputs, check: ReferenceOutputs, tol: Tolerances) -> Comparison:
    """Compare a check's outputs with the run's reference: IDENTICAL, EQUIVALENT or DIVERGED."""
    problems: list[str] = []
    missing = sorted(set(reference.examples) - set(check.examples))
    extra = sorted(set(check.examples) - set(reference.examples))
    if missing or extra:
        problems.append(
            f"{len(missing)} reference example(s) missing from the check and {len(extra)} extra "
            f"(first: {(missing + extra)[0]}); the split or dataset differs"
        )
    rows: list[dict[str, Any]] = []
    flips = 0
    flipped: list[dict[str, Any]] = []
    sample: list[dict[str, Any]] = []
    for example_id in sorted(set(reference.examples) & set(check.examples)):
        ref, got = reference.examples[example_id], check.examples[example_id]
        bound = tol.loglik_per_token * max(1, int(ref.get("tokens") or 1))
        values = [("loglik", ref.get("loglik"), got.get("loglik"))]
        values += [
            (f"label_scores.{c}", v, (got.get("label_scores") or {}).get(c))
            for c, v in sorted((ref.get("label_scores") or {}).items())
        ]
        for name, a, b in values:
            delta = abs(b - a) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else float("inf")
            rows.append(
                {
                    "id": example_id,
                    "field": name,
                    "reference": a,
                    "check": b,
                    "delta": delta,
                    "bound": bound,
                    "ratio": delta / bound if bound else float("inf"),
                }
            )
        flips += ref.get("predicted") != got.get("predicted")
        side_by_side = {
            "id": example_id,
            "tokens": ref.get("tokens"),
            "label": ref.get("label"),
            "loglik": {"reference": ref.get("loglik"), "check": got.get("loglik")},
            "predicted": {"reference": ref.get("predicted"), "check": got.get("predicted")},
        }
        if ref.get("predicted") != got.get("predicted"):
            flipped.append(side_by_side)
        if len(sample) < SAMPLE_SHOWN:
            sample.append(side_by_side)
    metrics: dict[str, dict[str, float | None]] = {}
    for name in ("accuracy", "macro_f1", "mean_loglik_per_token"):
        a, b = reference.summary.get(name), check.summary.get(name)
        if a is None and b is None:
            continue
        metric_delta: float | None = abs(b - a) if a is not None and b is not None else None
        metrics[name] = {"reference": a, "check": b, "delta": metric_delta}
        limit = tol.loglik_per_token if name == "mean_loglik_per_token" else tol.metric_abs
        if metric_delta is None or metric_delta > limit:
            problems.append(f"{name} {a} -> {b} (tolerance {limit:g})")
    check_probes = {p.get("index"): p for p in check.probes}
    probes = [_probe_difference(p, check_probes.get(p.get("index"), {}), tol) for p in reference.probes]
    problems += [
        f"probe {p['id']}: greedy continuation changed at token {p['first_difference']} "
        f"(reference margin {p['reference_margin']})"
        for p in probes
        if not p["ok"]
    ]
    over = [r for r in rows if r["delta"] > r["bound"]]
    if over:
        problems.append(f"{len(over)} log-likelihood(s) beyond {tol.loglik_per_token:g} nats per token")
    identical = (
        not problems
        and all(r["delta"] == 0 for r in rows)
        and flips == 0
        and all(p["identical"] for p in probes)
        and all(m["delta"] == 0 for m in metrics.values())
    )
    verdict = IDENTICAL if identical else EQUIVALENT if not problems else DIVERGED
    worst = sorted((r for r in rows if r["delta"] > 0), key=lambda r: (-r["ratio"], r["id"], r["field"]))
    finite = [r["delta"] for r in rows if r["delta"] != float("inf")]
    return Comparison(
        verdict,
        len(reference.examples),
        max(finite, default=0.0),
        len(over),
        flips,
        metrics,
        probes,
        worst[:WORST_SHOWN],
        problems,
        flipped,
        sample,
    )
