"""`bundler record BUNDLE OUTPUT_DIR`: check outputs made elsewhere (a cluster) against the recipe, then add them.

The outputs are what rank 0 of the runtime wrote (results.json, env.json, metrics.jsonl, adapter/, ...).
They are hostile until checked: sizes and counts are bounded, links and special files refused. Every
finding is reported at once and nothing is added unless all checks pass:
- identity: env.json's bundle_id (the runtime hashes the recipe it ran from) is this bundle's ID;
- runtime: the library versions env.json records are the ones requirements.lock pins;
- adapter: the safetensors file's sha256 is the one results.json records;
- layout: results.json and env.json record the same world size (and the expected one, if given);
- metrics: one finite training loss per step, as many steps as results.json says, at most max_steps,
  and the evaluation results.
Then the run is added as a local run is (bag.add_run, then card, statement and RO-Crate).
"""

from __future__ import annotations

import json
import math
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.bundle.bag import RECIPE, RUN_ANNOTATIONS, add_run, bundle_id_of
from bundler.bundle.hashing import canonical_json, sha256_file
from bundler.bundle.lockfile import canonical_name, parse_lock
from bundler.errors import NotRunOutputsError, RunOutputsRejected
from bundler.records import RecipeView
from bundler.runners.execute import annotate_run
from bundler.runners.launch import discard, staging_dir

REQUIRED = (
    "results.json",
    "env.json",
    "metrics.jsonl",
    "adapter/adapter_model.safetensors",
    "adapter/adapter_config.json",
)
MAX_FILES = 64  # the runtime writes about ten
MAX_TOTAL_BYTES = 64 << 30  # an adapter of a large model with every target module is a few GiB
MAX_RECORD_BYTES = 64 << 20  # results.json, env.json, metrics.jsonl


@dataclass(frozen=True)
class RunOutputs:
    """The parsed records of one run's outputs (after the layout checks)."""

    root: Path
    results: dict[str, Any]
    env: dict[str, Any]
    metrics: list[dict[str, Any]]


def read_outputs(output_dir: Path) -> RunOutputs:
    """Check the directory's layout (bounded, regular files only) and parse its records; exit 2 when unusable."""
    if not output_dir.is_dir():
        raise NotRunOutputsError(output_dir, "no such directory")
    files, total = [], 0
    for path in sorted(output_dir.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            raise NotRunOutputsError(output_dir, f"{path.relative_to(output_dir)} is a link or special file")
        files.append(path)
        total += path.lstat().st_size
        if len(files) > MAX_FILES or total > MAX_TOTAL_BYTES:
            raise NotRunOutputsError(output_dir, f"more than {MAX_FILES} files or {MAX_TOTAL_BYTES >> 30} GiB")
    missing = [name for name in REQUIRED if not (output_dir / name).is_file()]
    if missing:
        raise NotRunOutputsError(output_dir, f"missing {', '.join(missing)}")
    annotations = sorted(p.name for p in files if p.parent == output_dir and p.name in RUN_ANNOTATIONS)
    if annotations:
        raise NotRunOutputsError(output_dir, f"holds {', '.join(annotations)}, which bundler writes, not the runtime")
    return RunOutputs(
        output_dir,
        _json(output_dir / "results.json", output_dir),
        _json(output_dir / "env.json", output_dir),
        [_object(line, output_dir) for line in _text(output_dir / "metrics.jsonl", output_dir).splitlines() if line],
    )


def _text(path: Path, root: Path) -> str:
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise NotRunOutputsError(root, f"{path.name} is larger than {MAX_RECORD_BYTES >> 20} MiB")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise NotRunOutputsError(root, f"{path.name} is not UTF-8") from None


def _object(text: str, root: Path) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise NotRunOutputsError(root, f"a record is not JSON: {text[:60]!r}") from None
    if not isinstance(value, dict):
        raise NotRunOutputsError(root, f"a record is not a JSON object: {text[:60]!r}")
    return value


def _json(path: Path, root: Path) -> dict[str, Any]:
    return _object(_text(path, root), root)


def _base_version(version: str) -> str:
    return version.split("+", 1)[0]


def check_outputs(bundle: Path, outputs: RunOutputs, expected_world_size: int | None = None) -> list[str]:
    """Every way the outputs disagree with the bundle's recipe (empty: they are a run of it)."""

    findings: list[str] = []
    results, env = outputs.results, outputs.env
    bundle_id = bundle_id_of(bundle)
    recorded_id = env.get("bundle_id")
    if recorded_id != bundle_id:
        findings.append(
            f"env.json records bundle {recorded_id or 'none (a runtime older than bundle IDs in env.json)'}, "
            f"this bundle is {bundle_id}"
        )
    if results.get("schema") != "bundler.results/1" or env.get("schema") != "bundler.env/1":
        findings.append(f"record schemas {results.get('schema')!r} / {env.get('schema')!r} are not bundler's")

    pins: dict[str, set[str]] = {}
    for pin in parse_lock(bundle / RECIPE / "requirements.lock"):
        pins.setdefault(pin.name, set()).add(pin.version)
    for name, version in sorted((env.get("libraries") or {}).items()):
        locked = pins.get(canonical_name(name))
        if (
            locked
            and str(version) not in locked
            and _base_version(str(version)) not in {_base_version(v) for v in locked}
        ):
            findings.append(f"env.json: {name} {version} ran, requirements.lock pins {', '.join(sorted(locked))}")

    adapter = outputs.root / "adapter" / "adapter_model.safetensors"
    if sha256_file(adapter) != results.get("adapter_sha256"):
        findings.append("adapter/adapter_model.safetensors does not have the sha256 results.json records")

    world = (env.get("distributed") or {}).get("world_size")
    if not isinstance(world, int) or world < 1 or results.get("world_size") != world:
        findings.append(f"world size: results.json records {results.get('world_size')}, env.json {world}")
    elif expected_world_size is not None and world != expected_world_size:
        findings.append(f"world size {world} ran, {expected_world_size} was expected")

    max_steps = int(RecipeView.of(bundle).value("train.max_steps") or 1)
    steps = [m for m in outputs.metrics if "loss" in m]
    count = results.get("steps")
    if not isinstance(count, int) or not 1 <= count <= max_steps:
        findings.append(f"results.json records {count} steps; the recipe trains 1 to {max_steps}")
    elif [m.get("step") for m in steps] != list(range(1, count + 1)):
        findings.append(f"metrics.jsonl does not hold one loss per step 1..{count}")
    elif not all(isinstance(m["loss"], (int, float)) and math.isfinite(m["loss"]) for m in steps):
        findings.append("metrics.jsonl holds a loss that is not a finite number")
    if not isinstance(results.get("eval"), dict) or results.get("final_train_loss") is None:
        findings.append("results.json lacks the evaluation results or the final training loss")
    return findings


def record_outputs(bundle: Path, output_dir: Path, *, expected_world_size: int | None = None) -> str:
    """Check the outputs against the recipe, copy them in as a run, write its card and statement; return the run ID."""

    outputs = read_outputs(output_dir)
    findings = check_outputs(bundle, outputs, expected_world_size)
    if findings:
        raise RunOutputsRejected(output_dir, bundle_id_of(bundle), findings)
    staged = staging_dir(bundle)
    try:
        shutil.copytree(output_dir, staged, dirs_exist_ok=True)
        env = outputs.env
        record = {
            "schema": "bundler.run/1",
            "runner": env.get("runner"),
            "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "recorded_by": "bundler record",
            "checks": ["bundle_id", "library_versions", "adapter_sha256", "world_size", "metrics"],
            "environment": {"image_digest": env.get("image_digest"), "distributed": env.get("distributed")},
        }
        run_id = add_run(bundle, staged, {"run.json": canonical_json(record).encode()})
    except BaseException:
        discard(staged)
        raise
    annotate_run(bundle, run_id)
    return run_id
