"""`bundler check`: run inference with an adapter and compare it with the run's reference outputs.

No retraining: the base model (verified by hash) and an adapter (the run's own, a local directory or
a Hub repo) run through the bundle's own runtime (`python -m runtime.check`) in the pinned
environment, and the resulting reference_outputs.jsonl is compared line by line with the one the
run wrote at the end of training. Nothing is written into the bundle.

Verdicts: IDENTICAL (every number equal), EQUIVALENT (within `Tolerances`), DIVERGED (exit 1).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.bundle.bag import (
    MANIFEST,
    RECIPE,
    RUNS,
    bundle_id_of,
    open_bundle,
    parse_manifest,
    read_json_object,
    resolve_run,
)
from bundler.errors import (
    AdapterConfigError,
    AdapterMismatchError,
    EnvironmentSetupError,
    InputError,
    ReferenceMissingError,
)

CHECK_SCHEMA = "bundler.check/1"
REFERENCE_FILE = "reference_outputs.jsonl"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
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


# --- comparison (pure: no files, no processes) ---


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


# --- the adapter to check ---


@dataclass
class AdapterSource:
    """Where the adapter came from and its files' sha256."""

    kind: str  # "run" | "path" | "hub"
    name: str
    directory: Path
    revision: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "revision": self.revision, "files": self.files}


def fetch_adapter(spec: str | None, run_dir: Path, work: Path) -> AdapterSource:
    """The run's adapter (spec None), a local directory, or ORG/NAME[@REVISION] from the Hub."""
    from bundler.bundle.hashing import sha256_file

    if spec is None:
        source = AdapterSource("run", f"run {run_dir.name[:12]}", run_dir / "adapter")
    elif Path(spec).exists():
        source = AdapterSource("path", spec, Path(spec))
    else:
        source = _download(spec, work)
    missing = [n for n in ADAPTER_FILES if not (source.directory / n).is_file()]
    if missing:
        raise InputError(
            f"the adapter from {source.name} has no {', '.join(missing)}",
            "pass a directory or Hub repo holding a saved PEFT adapter",
        )
    source.files = {n: sha256_file(source.directory / n) for n in ADAPTER_FILES}
    return source


def _download(spec: str, work: Path) -> AdapterSource:
    """snapshot_download of the adapter files only, into `work` (never the bundle)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    repo_id, _, revision = spec.partition("@")
    try:
        path = Path(
            snapshot_download(
                repo_id, revision=revision or None, allow_patterns=list(ADAPTER_FILES), cache_dir=work / "hub-cache"
            )
        )
    except HFValidationError:
        raise InputError(
            f"--adapter {spec!r} is neither a directory nor a Hub repo ID",
            "pass a local adapter directory or ORG/NAME[@REVISION]",
        ) from None
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        if status in (401, 403, 404):
            raise InputError(
                f"the Hub has no adapter repo {spec} ({status})",
                "check the repo ID and revision; private repos need HF_TOKEN",
            ) from None
        raise EnvironmentSetupError(f"downloading {spec} failed: {exc}", "try again later") from None
    except OSError as exc:  # requests' ConnectionError and offline mode are OSErrors
        raise EnvironmentSetupError(
            f"downloading {spec} failed: {exc}", "check HF_ENDPOINT and the network, or pass a local directory"
        ) from None
    return AdapterSource("hub", repo_id, path, revision=path.name)


def check_adapter_config(source: AdapterSource, model_record: Mapping[str, Any]) -> None:
    """The adapter must be a LoRA adapter for the bundle's base model (by Hub ID)."""
    try:
        config = json.loads((source.directory / "adapter_config.json").read_text(encoding="utf-8"))
    except ValueError:
        raise AdapterConfigError(source.name, "adapter_config.json is not valid JSON") from None
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise AdapterConfigError(source.name, f"peft_type is {config.get('peft_type')!r}, not LORA")
    base, expected = config.get("base_model_name_or_path"), model_record.get("id")
    if expected and base != expected:
        raise AdapterConfigError(
            source.name, f"its base_model_name_or_path is {base!r}, the bundle's base model is {expected!r}"
        )


def recorded_adapter_hashes(bundle: Path, run_id: str) -> dict[str, str]:
    manifest = parse_manifest((bundle / MANIFEST).read_text(encoding="utf-8"), MANIFEST)
    prefix = f"{RUNS}/{run_id}/adapter/"
    return {n: manifest[prefix + n] for n in ADAPTER_FILES if prefix + n in manifest}


# --- running it ---


def _interpreter(bundle: Path, runner: str, allow_drift: bool) -> tuple[str, list[dict[str, Any]]]:
    """The python to run the runtime with, and the drift from the lock it runs with."""
    lock = bundle / RECIPE / "requirements.lock"
    if runner == "venv":
        from bundler.recipe.lockenv import ensure_venv, venv_python

        return str(venv_python(ensure_venv(lock))), []
    if runner == "host":
        import sys

        from bundler.runners.host import checked_drift

        return sys.executable, checked_drift(lock.read_text(encoding="utf-8"), allow_drift, "check")
    raise InputError(f"unknown runner {runner!r} for check", "choose venv or host")


def check_run(
    bundle: Path,
    *,
    run_id: str | None = None,
    adapter: str | None = None,
    runner: str = "venv",
    allow_drift: bool = False,
    allow_mismatch: bool = False,
    model_dir: Path | None = None,
    data_dir: Path | None = None,
    tolerances: Tolerances = Tolerances(),
) -> dict[str, Any]:
    """Check an adapter against a run's reference outputs; return the bundler.check/1 report."""
    from bundler.bundle.verify import require_verified
    from bundler.runners.execute import locate_inputs
    from bundler.runners.launch import RunRequest, runtime_env, stream_runtime

    started = time.perf_counter()
    open_bundle(bundle)
    require_verified(bundle)
    run_id = resolve_run(bundle, run_id)
    run_dir = bundle / RUNS / run_id
    if not (run_dir / REFERENCE_FILE).is_file():
        raise ReferenceMissingError(run_id)
    recipe = bundle / RECIPE
    if not (recipe / "runtime" / "check.py").is_file():
        raise ReferenceMissingError(run_id)
    model_record = json.loads((recipe / "model.json").read_text(encoding="utf-8"))
    work = Path(tempfile.mkdtemp(prefix="bundler-check-"))
    try:
        source = fetch_adapter(adapter, run_dir, work)
        check_adapter_config(source, model_record)
        recorded = recorded_adapter_hashes(bundle, run_id)
        mismatched = sorted(n for n in ADAPTER_FILES if source.files.get(n) != recorded.get(n))
        if mismatched and not allow_mismatch:
            raise AdapterMismatchError(source.name, run_id, mismatched)
        python, drift = _interpreter(bundle, runner, allow_drift)
        model, data = locate_inputs(bundle, model_dir, data_dir, runner)
        out = work / "out"
        env = runtime_env(runner, RunRequest(bundle, model, data))
        env["PYTHONPATH"] = str(recipe)
        stream_runtime(
            [python, "-m", "runtime.check", str(recipe), str(source.directory.resolve()), str(out)],
            env,
            work,
            "checking",
        )
        reference_text = (run_dir / REFERENCE_FILE).read_text(encoding="utf-8")
        check_text = (out / REFERENCE_FILE).read_text(encoding="utf-8")
        comparison = compare_reference(
            ReferenceOutputs.parse(reference_text, f"run {run_id[:12]}"),
            ReferenceOutputs.parse(check_text, "the check"),
            tolerances,
        )
        timings = read_json_object(out / "check.json")
        check_env = read_json_object(out / "env.json")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from bundler.bundle.hashing import sha256_bytes

    results, run_record, run_env = (read_json_object(run_dir / n) for n in ("results.json", "run.json", "env.json"))
    seconds = round(time.perf_counter() - started, 3)
    return {
        "schema": CHECK_SCHEMA,
        "bundle": str(bundle),
        "bundle_id": bundle_id_of(bundle),
        "run_id": run_id,
        **comparison.as_dict(),
        "adapter": {
            **source.as_dict(),
            "recorded": recorded,
            "mismatched_files": mismatched,
            "matches_run": not mismatched,
        },
        "runner": runner,
        "allow_drift": allow_drift,
        "drift": drift,
        "libraries": _library_changes(run_env.get("libraries") or {}, check_env.get("libraries") or {}),
        "tolerances": tolerances.as_dict(),
        "reference_sha256": sha256_bytes(reference_text.encode("utf-8")),
        "check_sha256": sha256_bytes(check_text.encode("utf-8")),
        "seconds": {
            "check": seconds,
            "load": timings.get("load_seconds"),
            "inference": timings.get("inference_seconds"),
            "train": results.get("train_seconds"),
            "run": run_record.get("wall_seconds"),
        },
        "ratio_to_training": _ratio(seconds, results.get("train_seconds")),
        "ratio_to_run": _ratio(seconds, run_record.get("wall_seconds")),
    }


def _library_changes(reference: Mapping[str, Any], check: Mapping[str, Any]) -> dict[str, Any]:
    changed = {
        n: {"reference": reference.get(n), "check": check.get(n)}
        for n in sorted(set(reference) | set(check))
        if reference.get(n) != check.get(n)
    }
    return {"reference": dict(reference), "check": dict(check), "changed": changed}


def _ratio(a: float, b: object) -> float | None:
    return round(a / b, 3) if isinstance(b, (int, float)) and b > 0 else None


def _example_line(example: Mapping[str, Any]) -> str:
    """One example side by side: log-likelihood (nats over its tokens) and predicted label, run -> check."""
    loglik, predicted = example["loglik"], example["predicted"]

    def nats(value: object) -> str:
        return f"{value:.6f}" if isinstance(value, (int, float)) else "missing"

    label = f", true label {example['label']}" if example.get("label") is not None else ""
    guess = f", predicted {predicted['reference']} -> {predicted['check']}" if predicted["reference"] else ""
    return (
        f"{example['id']}: {nats(loglik['reference'])} -> {nats(loglik['check'])} nats "
        f"over {example['tokens']} token(s){label}{guess}"
    )


def report_lines(report: Mapping[str, Any]) -> list[str]:
    """The report for a person: verdict, evidence, the worst examples, timing, what changed."""
    adapter = report["adapter"]
    origin = adapter["name"] + (f"@{adapter['revision'][:12]}" if adapter.get("revision") else "")
    match = (
        "matches the run's recorded hashes"
        if adapter["matches_run"]
        else ("DIFFERS from the run: " + ", ".join(adapter["mismatched_files"]) + " (--allow-mismatch)")
    )
    probes = report["probes"]
    lines = [
        f"{report['verdict']}  run {report['run_id'][:12]}, adapter from {origin} ({match})",
        f"  {report['examples']} examples: max |Δ log-likelihood| {report['max_abs_loglik_delta']:.3g} nats "
        f"(bound {report['tolerances']['loglik_per_token']:g}/token), {report['over_bound']} beyond it, "
        f"{report['label_flips']} label flip(s); {sum(p['same_tokens'] for p in probes)}/{len(probes)} "
        "probe continuations identical",
    ]
    for name, m in report["metrics"].items():
        delta = "n/a" if m["delta"] is None else f"{m['delta']:.3g}"
        lines.append(f"  {name}: {m['reference']} -> {m['check']} (Δ {delta})")
    lines += [
        f"  probe {p['id']}: {p['reference_text']!r} -> {p['check_text']!r} (from token "
        f"{p['first_difference']}{', near-tie' if p['near_tie'] else ''})"
        for p in probes
        if not p["same_tokens"]
    ]
    if report.get("sample"):
        lines.append("  per-example log-likelihood of the reference response, run -> check (first by ID):")
        lines += [f"    {_example_line(e)}" for e in report["sample"]]
    if report.get("flipped"):
        lines.append(f"  label flips ({len(report['flipped'])}):")
        lines += [f"    {_example_line(e)}" for e in report["flipped"]]
    if report["worst"]:
        lines.append("  worst examples:")
        lines += [
            f"    {w['id']} {w['field']}: {w['reference']:.6g} -> {w['check']:.6g} "
            f"(Δ {w['delta']:.3g}, bound {w['bound']:.3g})"
            for w in report["worst"]
        ]
    lines += [f"  problem: {p}" for p in report["problems"]]
    changed = report["libraries"]["changed"]
    if changed:
        lines.append(
            "  libraries (run -> check): "
            + ", ".join(f"{n} {c['reference']} -> {c['check']}" for n, c in changed.items())
        )
    s = report["seconds"]
    lines.append(
        f"  check {s['check']:.1f} s (inference {s['inference']} s); training loop {s['train']} s, "
        f"whole run {s['run']} s (check/run = {report['ratio_to_run']})"
    )
    return lines
