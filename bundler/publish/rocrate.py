"""The RO-Crate (Process Run Crate) of a bundle's runs: data/ro-crate-metadata.json."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bundler.bundle.bag import PAYLOAD, RECIPE, RUNS, VENDOR, bundle_id_of, list_runs, payload_hashes, read_json_object
from bundler.records import RecipeView, determinism_variables, runtime_digest

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
    payload = payload_hashes(bundle)
    recipe = bundle / RECIPE
    view = RecipeView.at(recipe)
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
        "license": str(view.value("publish.license") or "not recorded"),
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
