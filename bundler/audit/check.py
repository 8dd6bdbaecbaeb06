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

from bundler.audit.compare_outputs import (
    DIVERGED,
    EQUIVALENT,
    IDENTICAL,
    ReferenceOutputs,
    Tolerances,
    compare_reference,
)
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
from bundler.bundle.hashing import sha256_bytes, sha256_file
from bundler.errors import (
    AdapterConfigError,
    AdapterMismatchError,
    EnvironmentSetupError,
    InputError,
    ReferenceMissingError,
)
from bundler.recipe.lockenv import ensure_venv, venv_python
from bundler.records import RunView
from bundler.runners.execute import locate_inputs
from bundler.runners.host import checked_drift
from bundler.runners.launch import RunRequest, runtime_env, stream_runtime

__all__ = [
    "CHECK_SCHEMA",
    "DIVERGED",
    "EQUIVALENT",
    "IDENTICAL",
    "ReferenceOutputs",
    "Tolerances",
    "check_run",
    "compare_reference",
    "report_lines",
]

CHECK_SCHEMA = "bundler.check/1"
REFERENCE_FILE = "reference_outputs.jsonl"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


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
        return str(venv_python(ensure_venv(lock))), []
    if runner == "host":
        import sys

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
    # deferred: it loads cryptography, which callers that never reach this line should not pay for
    from bundler.bundle.verify import require_verified

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

    run = RunView.read(run_dir)
    results, run_record, run_env = run.results, run.record, run.env
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
