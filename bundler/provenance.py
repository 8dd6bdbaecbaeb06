"""Signed provenance: an in-toto/SLSA statement per run, RO-Crate run metadata, ed25519 signatures.

What is written, and where (the bag's tag area is everything outside data/):

    data/ro-crate-metadata.json              payload; Process Run Crate 0.5: one CreateAction per run
    provenance/<run-id>.manifest-sha256.txt  the run's view of the payload manifest (see below)
    provenance/<run-id>.intoto.json          in-toto Statement v1, predicate SLSA provenance v1
    provenance/<run-id>.intoto.dsse.json     DSSE envelope: ed25519 signature over the statement's bytes
    provenance/signer.json                   the signer's PUBLIC key (PEM) and key ID; never the private key
    provenance/bundle.dsse.json              DSSE envelope over the signed manifest (below)

The statement (`write_provenance`, called after the card): subjects are the adapter files by sha256
and `provenance/<run-id>.manifest-sha256.txt`. buildDefinition.externalParameters holds the
resolved config and its seeds; resolvedDependencies the lock, base image digest, code commit and
archive, split manifest, base model revision and files, dataset files and the trainer source;
runDetails.builder.id names bundler and its version; byproducts carry the runner and the hardware
fingerprint (bundler.inspect.hardware_fingerprint) beside env.json's digest.

Why a run's manifest and not manifest-sha256.txt itself: the bag manifest changes whenever a later
run is added or a run is published, which must not falsify an earlier run's statement. The run's
manifest lists exactly what that run vouches for: data/recipe/, data/vendor/ and its own run
directory, less the files that publishing rewrites (README.md, the card, re-rendered with the repo
name, and publish.json, the record of the push). Its lines are BagIt lines, so `sha256sum -c`
checks them from the bag root.

What covers what (`bundler sign`):
- tagmanifest-sha256.txt: fixity of every tag file, envelopes included. It is not signed: a signature
  over it would have to live outside it, and bundle.py lists every tag file in it.
- provenance/<run-id>.intoto.dsse.json signs the statement, which pins the adapter and, through the
  run's manifest, every recipe, vendor and run file.
- provenance/bundle.dsse.json signs "the signed manifest": the bundle ID, the signer's key ID, the
  payload manifest less the publishing files above (the same rule as publish.py's pushed manifest),
  and the sha256 of every provenance/ file that is not an envelope (statements, run manifests,
  signer.json). So any payload file changed, added or removed after signing, and any statement
  rewritten, is a finding. data/ro-crate-metadata.json is covered here (it changes per run, so no
  run statement can name it).
- Not signed: bagit.txt (constant); bag-info.txt (its Bundle-Id and Payload-Oxum are recomputed by
  verify); the run cards and publish records (rewritten by `bundler push` after signing; every fact
  a card shows comes from signed files); the envelopes themselves.

Trust: verify checks every envelope against signer.json's key, so an envelope swapped for one by
another key is a finding. A bundle re-signed wholesale by someone else is only caught against a key
the auditor trusts: `provenance_findings(bundle, trusted_keys=[...])`. Sigstore keyless signing is
not implemented: it needs the network (Fulcio, Rekor), and bundles must verify offline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomllib

from bundler import __version__
from bundler.atomic import atomic_write_text
from bundler.bundle import (
    PAYLOAD,
    RECIPE,
    RUNS,
    VENDOR,
    _payload_hashes,
    _write_tags,
    bundle_id_of,
    list_runs,
    open_bundle,
    read_json_object,
)
from bundler.hashing import canonical_json, manifest_lines, sha256_bytes

PROVENANCE = "provenance"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
MANIFEST_PAYLOAD_TYPE = "application/vnd.bundler.signed-manifest+json"
SIGNED_MANIFEST_SCHEMA = "bundler.signed-manifest/1"
SIGNER_SCHEMA = "bundler.signer/1"
BUILD_TYPE = "urn:bundler:buildtype:lora-finetune:v1"
BUILDER_ID = f"urn:bundler:builder:bundler@{__version__}"
CRATE = f"{PAYLOAD}/ro-crate-metadata.json"
# Written by publishing after a signature may exist: never part of what is signed.
PUBLISH_REWRITTEN = frozenset({"README.md", "publish.json"})
SIGNER = f"{PROVENANCE}/signer.json"
BUNDLE_ENVELOPE = f"{PROVENANCE}/bundle.dsse.json"
_RUN_FILE = re.compile(rf"^{RUNS}/[^/]+/([^/]+)$")


def statement_name(run_id: str) -> str:
    return f"{PROVENANCE}/{run_id}.intoto.json"


def envelope_name(run_id: str) -> str:
    return f"{PROVENANCE}/{run_id}.intoto.dsse.json"


def run_manifest_name(run_id: str) -> str:
    return f"{PROVENANCE}/{run_id}.manifest-sha256.txt"


def is_publish_rewritten(path: str) -> bool:
    """True for a run's card and push record: rewritten by `bundler push`, so never signed."""
    match = _RUN_FILE.match(path)
    return bool(match and match.group(1) in PUBLISH_REWRITTEN)


def signed_payload_view(payload: Mapping[str, str]) -> dict[str, str]:
    """The payload manifest as signed: every payload file except the run cards and push records."""
    return {p: s for p, s in payload.items() if p.startswith(PAYLOAD + "/") and not is_publish_rewritten(p)}


def run_manifest(payload: Mapping[str, str], run_id: str) -> dict[str, str]:
    """What one run vouches for: recipe, vendored inputs and its own files, less the publishing files."""
    prefixes = (RECIPE + "/", VENDOR + "/", f"{RUNS}/{run_id}/")
    return {p: s for p, s in signed_payload_view(payload).items() if p.startswith(prefixes)}


def write_provenance(bundle: Path, run_id: str) -> list[Path]:
    """Write the RO-Crate metadata and the run's statement and manifest; keep the bag valid; return the paths."""
    open_bundle(bundle)
    if not (bundle / RUNS / run_id).is_dir():
        from bundler.errors import InputError

        raise InputError(f"run {run_id} does not exist in {bundle}", "`bundler inspect <bundle>` lists the runs")
    crate_text = canonical_json(build_crate(bundle))
    atomic_write_text(bundle / CRATE, crate_text)
    payload = _payload_hashes(bundle)
    payload[CRATE] = sha256_bytes(crate_text.encode("utf-8"))
    _write_tags(bundle, payload)

    lines = manifest_lines(run_manifest(payload, run_id))
    atomic_write_text(bundle / run_manifest_name(run_id), lines)
    statement = build_statement(bundle, run_id, payload, sha256_bytes(lines.encode("utf-8")))
    atomic_write_text(bundle / statement_name(run_id), canonical_json(statement))
    _write_tags(bundle, payload)
    return [bundle / CRATE, bundle / run_manifest_name(run_id), bundle / statement_name(run_id)]


def build_statement(bundle: Path, run_id: str, payload: Mapping[str, str], run_manifest_sha: str) -> dict[str, Any]:
    """The in-toto Statement v1 with an SLSA provenance v1 predicate for one run (pure: files in, dict out)."""
    from bundler.inspect import hardware_fingerprint

    recipe = bundle / RECIPE
    run_prefix = f"{RUNS}/{run_id}/"
    config = _toml(recipe / "config.toml")
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
                    "config": config,
                    "seeds": _seeds(config),
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


def runtime_digest(runtime_hashes: Mapping[str, str]) -> str:
    """sha256 of the runtime directory's manifest lines: the trainer's identity."""
    return sha256_bytes(manifest_lines(runtime_hashes).encode("utf-8"))


def determinism_variables(env: Mapping[str, Any]) -> dict[str, str]:
    """The environment variables set before the interpreter started (env.json records them as env.NAME)."""
    recorded = {
        key.removeprefix("env."): str(entry.get("value"))
        for key, entry in (env.get("determinism") or {}).items()
        if key.startswith("env.") and isinstance(entry, dict)
    }
    # The runtime contract (design.md section 5) fixes these; older env.json files did not record them.
    return recorded or {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", "PYTHONHASHSEED": "0"}


def _seeds(config: Mapping[str, Any]) -> dict[str, Any]:
    seeds = {
        "project.seed": (config.get("project") or {}).get("seed"),
        "train.seed": (config.get("train") or {}).get("seed"),
        "lora.init_seed": (config.get("lora") or {}).get("init_seed"),
        "split.seed": (config.get("split") or {}).get("seed"),
        "model.tiny.seed": ((config.get("model") or {}).get("tiny") or {}).get("seed"),
    }
    return {k: v for k, v in seeds.items() if v is not None}


def _file(payload: Mapping[str, str], rel: str, **annotations: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": rel, "digest": {"sha256": payload[rel]}}
    if annotations:
        entry["annotations"] = {k: v for k, v in annotations.items() if v is not None}
    return entry


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


# --- checking ---


Reader = Callable[[str], "str | None"]


def provenance_findings(
    hashed: Mapping[str, str], read_text: Reader, trusted_keys: Sequence[Any] | None = None
) -> list[str]:
    """Every provenance problem: statements vs files, signatures vs the signer's key and the signed manifest.

    Works from what bundle.check_bag already has, so a directory and a streamed .tar are judged alike:
    `hashed` maps bag-relative paths to the sha256 of the files as they are now, `read_text` reads a
    small tag file. Each finding starts with the provenance/ file it concerns.
    """
    from bundler.signing import signature_findings

    if not any(p.startswith(PROVENANCE + "/") for p in hashed):
        return [f"{PROVENANCE}/: the bundle is not signed, and a trusted key was required"] if trusted_keys else []
    return statement_findings(hashed, read_text) + signature_findings(hashed, read_text, trusted_keys)


def bundle_findings(bundle: Path, trusted_keys: Sequence[Any] | None = None) -> list[str]:
    """provenance_findings for a bundle directory (hashes every file)."""
    return provenance_findings(hash_bundle(bundle), directory_reader(bundle), trusted_keys)


def statement_findings(hashed: Mapping[str, str], read_text: Reader) -> list[str]:
    """Each statement must be an SLSA v1 in-toto statement whose subjects match the files as they are."""
    findings: list[str] = []
    for name in sorted(p for p in hashed if p.startswith(PROVENANCE + "/") and p.endswith(".intoto.json")):
        statement = loads_object(read_text(name))
        if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != SLSA_PROVENANCE:
            findings.append(f"{name}: not an in-toto Statement v1 with an SLSA provenance v1 predicate")
            continue
        subjects = statement.get("subject") or []
        if not subjects:
            findings.append(f"{name}: names no subject")
        for subject in subjects:
            target = str(subject.get("name", ""))
            want = (subject.get("digest") or {}).get("sha256", "")
            found = hashed.get(target)
            if found is None:
                findings.append(f"{name}: subject {target} is missing")
            elif found != want:
                findings.append(f"{name}: subject {target} has sha256 {found[:12]}, the statement says {want[:12]}")
            elif target.endswith(".manifest-sha256.txt"):
                findings += _run_manifest_findings(target, read_text(target), hashed)
    return findings


def _run_manifest_findings(name: str, text: str | None, hashed: Mapping[str, str]) -> list[str]:
    from bundler.bundle import parse_manifest
    from bundler.errors import InputError

    try:
        lines = parse_manifest(text or "", name)
    except InputError as exc:
        return [f"{name}: {exc}"]
    findings = []
    for rel, want in sorted(lines.items()):
        found = hashed.get(rel)
        if found is None:
            findings.append(f"{name}: {rel} is missing")
        elif found != want:
            findings.append(f"{name}: {rel} has sha256 {found[:12]}, the run's manifest says {want[:12]}")
    return findings


def hash_bundle(bundle: Path) -> dict[str, str]:
    """{bag-relative path: sha256} of every file of a bundle directory."""
    from bundler.hashing import hash_files, list_files

    return {p.relative_to(bundle).as_posix(): s for p, s in hash_files(list_files(bundle)).items()}


def directory_reader(bundle: Path) -> Reader:
    def read_text(rel: str) -> str | None:
        path = bundle / rel
        return path.read_text(encoding="utf-8") if path.is_file() and not path.is_symlink() else None

    return read_text


def loads_object(text: str | None) -> dict[str, Any]:
    """Parse a JSON object; anything else (missing, not JSON, not an object) reads as {}."""
    try:
        loaded = json.loads(text or "")
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


# --- RO-Crate (Process Run Crate) ---

RO_CRATE_CONTEXT = ["https://w3id.org/ro/crate/1.1/context", "https://w3id.org/ro/terms/workflow-run/context"]
PROCESS_RUN_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
DOCKER_IMAGE = "https://w3id.org/ro/terms/workflow-run#DockerImage"
RECIPE_INPUTS = (
    "config.toml",
    "requirements.lock",
    "image.lock.json",
    "Dockerfile",
    "source.json",
    "code.tar",
    "splits.json",
    "model.json",
    "dataset.json",
)


def build_crate(bundle: Path) -> dict[str, Any]:
    """ro-crate-metadata.json for the payload (crate root = data/): a CreateAction per recorded run."""
    payload = _payload_hashes(bundle)
    recipe = bundle / RECIPE
    config = _toml(recipe / "config.toml")
    bundle_id = bundle_id_of(bundle)
    entities: dict[str, dict[str, Any]] = {}

    def file(rel: str, **extra: Any) -> dict[str, str]:
        crate_id = rel.removeprefix(PAYLOAD + "/")
        entities[crate_id] = {
            "@id": crate_id,
            "@type": "File",
            "name": Path(rel).name,
            "sha256": payload[rel],
            "contentSize": str((bundle / rel).stat().st_size),
            **extra,
        }
        return {"@id": crate_id}

    runtime = {p: s for p, s in payload.items() if p.startswith(f"{RECIPE}/runtime/")}
    instrument_id = "recipe/runtime/"
    entities[instrument_id] = {
        "@id": instrument_id,
        "@type": ["Dataset", "SoftwareSourceCode"],
        "name": "bundler runtime (the trainer)",
        "description": "Runs as `python -m runtime <recipe> <out>`; identified by the sha256 of its manifest lines.",
        "identifier": f"sha256:{runtime_digest(runtime)}",
        "programmingLanguage": "Python",
        "hasPart": [file(p) for p in sorted(runtime)],
    }
    inputs = [file(f"{RECIPE}/{n}") for n in RECIPE_INPUTS if f"{RECIPE}/{n}" in payload]
    inputs += [file(p) for p in sorted(payload) if p.startswith(VENDOR + "/")]
    image = read_json_object(recipe / "image.lock.json")
    actions = []
    for run_id in list_runs(bundle):
        actions.append(_run_action(bundle, run_id, payload, file, entities, image, inputs, instrument_id))
    root: dict[str, Any] = {
        "@id": "./",
        "@type": "Dataset",
        "name": f"bundler bundle {bundle_id[:12]}",
        "description": "A content-hashed LoRA fine-tuning run bundle (BagIt payload): recipe, inputs and runs.",
        "identifier": f"bundler:{bundle_id}",
        "conformsTo": [{"@id": PROCESS_RUN_CRATE}],
        "license": str((config.get("publish") or {}).get("license") or "not recorded"),
        "hasPart": [{"@id": i} for i in sorted(entities) if entities[i]["@type"] == "File" or i == instrument_id],
        "mentions": [{"@id": a["@id"]} for a in actions],
    }
    finished = [a["endTime"] for a in actions if a.get("endTime")]
    if finished:
        root["datePublished"] = max(finished)  # from run.json, so the crate stays a function of the bundle
    graph = [
        {
            "@id": "ro-crate-metadata.json",
            "@type": "CreativeWork",
            "about": {"@id": "./"},
            "conformsTo": {"@id": "https://w3id.org/ro/crate/1.1"},
        },
        root,
        {"@id": PROCESS_RUN_CRATE, "@type": "CreativeWork", "name": "Process Run Crate", "version": "0.5"},
        *actions,
        *(entities[i] for i in sorted(entities)),
    ]
    return {"@context": RO_CRATE_CONTEXT, "@graph": graph}


def _run_action(
    bundle: Path,
    run_id: str,
    payload: Mapping[str, str],
    file: Any,
    entities: dict[str, dict[str, Any]],
    image: Mapping[str, Any],
    inputs: list[dict[str, str]],
    instrument_id: str,
) -> dict[str, Any]:
    prefix = f"{RUNS}/{run_id}/"
    run_record = read_json_object(bundle / prefix / "run.json")
    env = read_json_object(bundle / prefix / "env.json")
    results = [file(p) for p in sorted(payload) if p.startswith(prefix + "adapter/")]
    results += [file(prefix + n) for n in ("results.json", "metrics.jsonl") if prefix + n in payload]
    environment = []
    for name, value in sorted(determinism_variables(env).items()):
        env_id = f"#env-{name}-{value}"
        entities[env_id] = {"@id": env_id, "@type": "PropertyValue", "name": name, "value": value}
        environment.append({"@id": env_id})
    action: dict[str, Any] = {
        "@id": f"#run-{run_id}",
        "@type": "CreateAction",
        "name": f"LoRA fine-tune, run {run_id[:12]}",
        "identifier": run_id,
        "instrument": {"@id": instrument_id},
        "object": inputs,
        "result": results,
        "environment": environment,
        "actionStatus": {"@id": "http://schema.org/CompletedActionStatus"},
    }
    for key, field in (("startTime", "started"), ("endTime", "finished")):
        if run_record.get(field):
            action[key] = run_record[field]
    digest = str(env.get("image_digest") or image.get("digest") or "")
    if digest.startswith("sha256:"):
        image_id = f"#image-{digest.removeprefix('sha256:')[:12]}"
        reference = str(image.get("reference") or "")
        registry, _, rest = reference.partition("/") if "/" in reference else ("", "", reference)
        name, _, tag = rest.rpartition(":") if ":" in rest else (rest, "", "")
        runner = run_record.get("runner") or env.get("runner")
        entities[image_id] = {
            "@id": image_id,
            "@type": "ContainerImage",
            "additionalType": {"@id": DOCKER_IMAGE},
            "registry": registry,
            "name": name,
            "tag": tag,
            "sha256": digest.removeprefix("sha256:"),
            "description": (
                "the image this run ran in"
                if env.get("image_digest")
                else f"the base image the recipe pins; this run used the {runner} runner on the same lock"
            ),
        }
        action["containerImage"] = {"@id": image_id}
    return action
