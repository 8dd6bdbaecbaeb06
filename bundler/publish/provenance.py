"""Provenance: an in-toto/SLSA statement per run and RO-Crate run metadata (signatures: bundler.bundle.attest).

What is written, and where (the bag's tag area is everything outside data/):

    data/ro-crate-metadata.json              payload; Process Run Crate 0.5: one CreateAction per run
    provenance/<run-id>.manifest-sha256.txt  the run's view of the payload manifest (see below)
    provenance/<run-id>.intoto.json          in-toto Statement v1, predicate SLSA provenance v1
    provenance/signatures/<NNNN>-<key>/      one per `bundler sign` (bundler.publish.sign, bundler.bundle.attest)

The statement (`write_provenance`, called when a run is recorded, after its card): subjects are the
adapter files by sha256 and `provenance/<run-id>.manifest-sha256.txt`. buildDefinition.externalParameters
holds the resolved config and its seeds; resolvedDependencies the lock, base image digest, code commit and
archive, split manifest, base model revision and files, dataset files and the trainer source;
runDetails.builder.id names bundler and its version; byproducts carry the runner and the hardware
fingerprint (bundler.records.hardware_fingerprint) beside env.json's digest. `bundler verify` requires
a statement for every run and recomputes its subjects and run manifest from the files.

Why a run's manifest and not manifest-sha256.txt itself: the bag manifest changes whenever a later
run is added or a run is published, which must not falsify an earlier run's statement. The run's
manifest lists exactly what that run vouches for: data/recipe/, data/vendor/ and its own run
directory, less the files that publishing rewrites (README.md, the card, re-rendered with the repo
name, and publish.json, the record of the push). Its lines are BagIt lines, so `sha256sum -c`
checks them from the bag root. A signature, by contrast, covers every file, cards and records included.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bundler import __version__
from bundler.bundle.atomic import atomic_write_text
from bundler.bundle.attest import (
    CRATE,
    SLSA_PROVENANCE,
    STATEMENT_TYPE,
    run_manifest,
    run_manifest_name,
    statement_name,
)
from bundler.bundle.bag import (
    RECIPE,
    RUNS,
    open_bundle,
    payload_hashes,
    read_bag_info,
    read_json_object,
    write_tags,
)
from bundler.bundle.hashing import canonical_json, manifest_lines, sha256_bytes
from bundler.errors import InputError
from bundler.publish.rocrate import build_crate
from bundler.records import RecipeView, determinism_variables, hardware_fingerprint, runtime_digest

BUILD_TYPE = "urn:bundler:buildtype:lora-finetune:v1"
BUILDER_ID = f"urn:bundler:builder:bundler@{__version__}"


def write_provenance(bundle: Path, run_id: str) -> list[Path]:
    """Write the RO-Crate metadata and the run's statement and manifest; keep the bag valid; return the paths."""
    open_bundle(bundle)
    if not (bundle / RUNS / run_id).is_dir():
        raise InputError(f"run {run_id} does not exist in {bundle}", "`bundler inspect <bundle>` lists the runs")
    crate_text = canonical_json(build_crate(bundle))
    atomic_write_text(bundle / CRATE, crate_text)
    payload = payload_hashes(bundle)
    payload[CRATE] = sha256_bytes(crate_text.encode("utf-8"))
    write_tags(bundle, payload)

    lines = manifest_lines(run_manifest(payload, run_id))
    atomic_write_text(bundle / run_manifest_name(run_id), lines)
    statement = build_statement(bundle, run_id, payload, sha256_bytes(lines.encode("utf-8")))
    atomic_write_text(bundle / statement_name(run_id), canonical_json(statement))
    write_tags(bundle, payload)
    return [bundle / CRATE, bundle / run_manifest_name(run_id), bundle / statement_name(run_id)]


def build_statement(bundle: Path, run_id: str, payload: Mapping[str, str], run_manifest_sha: str) -> dict[str, Any]:
    """The in-toto Statement v1 with an SLSA provenance v1 predicate for one run (pure: files in, dict out)."""
    recipe = bundle / RECIPE
    run_prefix = f"{RUNS}/{run_id}/"
    view = RecipeView.at(recipe)
    run_record = read_json_object(bundle / run_prefix / "run.json")
    env = read_json_object(bundle / run_prefix / "env.json")
    subjects = [
        {"name": p, "digest": {"sha256": s}}
        for p, s in sorted(payload.items())
        if p.startswith(run_prefix + "adapter/")
    ]
    subjects.append({"name": run_manifest_name(run_id), "digest": {"sha256": run_manifest_sha}})
    runner = run_record.get("runner") or env.get("runner")
    metadata = {"invocationId": run_id}
    for key, field in (("startedOn", "started"), ("finishedOn", "finished")):
        if run_record.get(field):
            metadata[key] = run_record[field]
    byproducts = [
        _file(payload, run_prefix + name)
        for name in ("results.json", "metrics.jsonl", "run.json")
        if run_prefix + name in payload
    ]
    if run_prefix + "env.json" in payload:
        env_entry = _file(payload, run_prefix + "env.json")
        env_entry["annotations"] = {"runner": runner, "hardware": hardware_fingerprint(env)}
        byproducts.insert(0, env_entry)
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "config": view.config,
                    "seeds": view.recorded_seeds(),
                    "maxStepsOverride": run_record.get("max_steps_override"),
                },
                "internalParameters": {"runner": runner, "environment": determinism_variables(env)},
                "resolvedDependencies": resolved_dependencies(bundle, payload),
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"bundler": __version__, "runner": str(runner)}},
                "metadata": metadata,
                "byproducts": byproducts,
            },
        },
    }


def resolved_dependencies(bundle: Path, payload: Mapping[str, str]) -> list[dict[str, Any]]:
    """Lock, base image, code, splits, model and dataset files, trainer: each a ResourceDescriptor."""
    recipe = bundle / RECIPE
    deps: list[dict[str, Any]] = []
    for name, role in (
        ("requirements.lock", "lock"),
        ("requirements.in", "requirements"),
        ("Dockerfile", "dockerfile"),
        ("config.toml", "config"),
    ):
        if f"{RECIPE}/{name}" in payload:
            deps.append(_file(payload, f"{RECIPE}/{name}", role=role))
    image = read_json_object(recipe / "image.lock.json")
    if image.get("reference"):
        entry: dict[str, Any] = {
            "name": image["reference"],
            "uri": f"docker://{image['reference']}",
            "annotations": {
                "role": "base image",
                "platform": image.get("platform"),
                "python": image.get("python"),
                "cuda": image.get("cuda"),
            },
        }
        digest = str(image.get("digest") or "")
        if digest.startswith("sha256:"):
            entry["digest"] = {"sha256": digest.removeprefix("sha256:")}
        deps.append(entry)
    source = read_json_object(recipe / "source.json")
    # The origin URL sits in bag-info.txt, outside the ID (older bundles kept it in source.json).
    source.setdefault("repo", read_bag_info(bundle).get("Source-Origin"))
    if source.get("commit"):
        code: dict[str, Any] = {
            "name": "code",
            "digest": {"gitCommit": source["commit"]},
            "annotations": {"role": "code commit", "dirty": bool(source.get("dirty"))},
        }
        if source.get("tree"):
            code["digest"]["gitTree"] = source["tree"]
        if source.get("repo"):
            code["uri"] = f"git+{source['repo']}@{source['commit']}"
        deps.append(code)
    if f"{RECIPE}/code.tar" in payload:
        deps.append(_file(payload, f"{RECIPE}/code.tar", role="code archive"))
    if f"{RECIPE}/splits.json" in payload:
        roots = {n: s.get("root") for n, s in (read_json_object(recipe / "splits.json").get("splits") or {}).items()}
        deps.append(_file(payload, f"{RECIPE}/splits.json", role="split manifest", roots=roots))
    model = read_json_object(recipe / "model.json")
    if f"{RECIPE}/model.json" in payload:
        deps.append(
            _file(
                payload,
                f"{RECIPE}/model.json",
                role="base model",
                model=model.get("id"),
                revision=model.get("revision"),
                source=model.get("source"),
            )
        )
    for rel, sha in sorted((model.get("files") or {}).items()):
        deps.append(
            {
                "name": f"model/{rel}",
                "digest": {"sha256": sha},
                "annotations": {"role": "base model file", "model": model.get("id"), "revision": model.get("revision")},
            }
        )
    dataset = read_json_object(recipe / "dataset.json")
    if f"{RECIPE}/dataset.json" in payload:
        deps.append(_file(payload, f"{RECIPE}/dataset.json", role="dataset"))
    for rel, sha in sorted((dataset.get("files") or {}).items()):
        deps.append(
            {
                "name": f"dataset/{rel}",
                "digest": {"sha256": sha},
                "annotations": {"role": "dataset file", "format": dataset.get("format")},
            }
        )
    runtime = {p: s for p, s in payload.items() if p.startswith(f"{RECIPE}/runtime/")}
    if runtime:
        deps.append(
            {
                "name": f"{RECIPE}/runtime/",
                "digest": {"sha256": runtime_digest(runtime)},
                "annotations": {"role": "trainer", "digestOf": "manifest-sha256.txt lines of the directory"},
            }
        )
    return deps


def _file(payload: Mapping[str, str], rel: str, **annotations: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": rel, "digest": {"sha256": payload[rel]}}
    if annotations:
        entry["annotations"] = {k: v for k, v in annotations.items() if v is not None}
    return entry


# --- checking ---


# --- RO-Crate (Process Run Crate) ---
