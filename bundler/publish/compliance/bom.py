"""A CycloneDX 1.6 ML-BOM of one run: the adapter, its base model, data, code, packages and base image.

Built with cyclonedx-python-lib; the tests check it with the library's strict JSON validator against
the 1.6 schema (not done here: loading jsonschema and the schemas costs more than writing all documents).
The library (11.x) has no model for `modelCard`, so the card is added to the serialised adapter
component before validation; the validator then checks it against the schema like everything else.
The serial number is a UUIDv5 of the bundle and run IDs and the timestamp is the run's recorded finish,
so the same bundle gives the same bytes.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import LicenseExpression
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from bundler.publish.compliance.evidence import Evidence, as_map, without_host_paths
from bundler.publish.compliance.techdoc import architecture, base_parameters

ADAPTER_REF = "adapter"
BASE_REF = "base-model"
DATASET_REF = "dataset"
CODE_REF = "code"
IMAGE_REF = "base-image"
# Our own namespace for UUIDv5 serial numbers: uuid5(NAMESPACE_URL, "urn:bundler:bom").
BOM_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:bundler:bom")


def build_bom(ev: Evidence) -> str:
    """The BOM as JSON text (sorted keys, LF) in CycloneDX 1.6."""
    bom = Bom()
    bom.serial_number = uuid.uuid5(BOM_NAMESPACE, f"{ev.bag_info.get('Bundle-Id', '')}/{ev.run_id}")
    bom.metadata.timestamp = _timestamp(ev.run.get("finished"))
    adapter = _adapter(ev)
    bom.metadata.component = adapter
    base, dataset, code = _base_model(ev), _dataset(ev), _code(ev)
    packages = [_package(pin.name, pin.version, pin.hashes) for pin in ev.pins]
    image = _image(ev)
    for component in (base, dataset, code, *packages, *([image] if image else [])):
        bom.components.add(component)
    bom.register_dependency(adapter, [base, dataset, code])
    bom.register_dependency(code, [*packages, *([image] if image else [])])
    text = JsonV1Dot6(bom).output_as_string()
    document = json.loads(text)
    document["metadata"]["component"]["modelCard"] = _model_card(ev)
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def _timestamp(finished: Any) -> datetime.datetime:
    try:
        return datetime.datetime.strptime(str(finished), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def _sha(content: str | None) -> list[HashType]:
    return [HashType(alg=HashAlgorithm.SHA_256, content=content)] if content else []


def _file(name: str, sha: str, ref: str) -> Component:
    return Component(name=name, type=ComponentType.FILE, bom_ref=f"{ref}:{name}", hashes=_sha(sha))


def _adapter(ev: Evidence) -> Component:
    name = f"{as_map(ev.config.get('project')).get('name') or 'bundle'}-lora"
    license_id = as_map(ev.config.get("publish")).get("license")
    return Component(
        name=name,
        version=ev.run_id,
        type=ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref=ADAPTER_REF,
        hashes=_sha(ev.results.get("adapter_sha256")),
        licenses=[LicenseExpression(license_id)] if license_id else [],
        properties=[
            Property(name="bundler:bundle-id", value=ev.bag_info.get("Bundle-Id", "")),
            Property(name="bundler:run-id", value=ev.run_id),
        ],
    )


def _base_model(ev: Evidence) -> Component:
    files = as_map(ev.model.get("files"))
    model_id = str(ev.model.get("upstream_id") or ev.model.get("id") or "base-model")
    return Component(
        name=model_id,
        version=str(ev.model.get("revision") or ""),
        type=ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref=BASE_REF,
        components=[_file(n, files[n], BASE_REF) for n in sorted(files)],
        properties=[Property(name="bundler:model-source", value=str(ev.model.get("source") or ""))],
    )


def _dataset(ev: Evidence) -> Component:
    files = as_map(ev.dataset.get("files"))
    return Component(
        name=str(without_host_paths(ev.dataset.get("hub_id") or ev.dataset.get("source") or "dataset")),
        type=ComponentType.DATA,
        bom_ref=DATASET_REF,
        components=[_file(n, files[n], DATASET_REF) for n in sorted(files)],
    )


def _code(ev: Evidence) -> Component:
    commit = str(ev.source.get("commit") or "")
    return Component(
        name=str(as_map(ev.config.get("project")).get("name") or "code"),
        version=commit,
        type=ComponentType.APPLICATION,
        bom_ref=CODE_REF,
        hashes=_sha(ev.hashes.get(ev.recipe("code.tar"))),
        properties=[Property(name="bundler:git-tree", value=str(ev.source.get("tree") or ""))],
    )


def _package(name: str, version: str, hashes: tuple[str, ...]) -> Component:
    purl = PackageURL("pypi", None, name, version)
    return Component(
        name=name,
        version=version,
        type=ComponentType.LIBRARY,
        bom_ref=purl.to_string(),
        purl=purl,
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=h) for h in hashes],
    )


def _image(ev: Evidence) -> Component | None:
    digest = str(ev.image.get("digest") or "")
    reference = str(ev.image.get("reference") or "")
    if not digest.startswith("sha256:"):
        return None
    repository, colon, tag = reference.rpartition(":")
    if not colon or "/" in tag:  # no tag, or the colon was a registry port
        repository = reference
    name = repository.rsplit("/", 1)[-1] or "base-image"
    purl = PackageURL("oci", None, name, digest, qualifiers={"repository_url": repository} if repository else None)
    return Component(
        name=name,
        version=digest,
        type=ComponentType.CONTAINER,
        bom_ref=IMAGE_REF,
        purl=purl,
        hashes=_sha(digest.removeprefix("sha256:")),
    )


def _model_card(ev: Evidence) -> dict[str, Any]:
    """CycloneDX 1.6 modelCard: parameters, datasets, and the run's eval metrics as quantitative analysis."""
    arch, _ = architecture(ev)
    lora = as_map(ev.config.get("lora"))
    base = base_parameters(ev)
    parameters: dict[str, Any] = {
        "approach": {"type": "supervised"},
        "task": "text-generation",
        "architectureFamily": str(arch.get("model_type") or "llama"),
        "modelArchitecture": f"LoRA r={lora.get('r')} on {', '.join(lora.get('target_modules') or [])}",
        "datasets": [{"ref": DATASET_REF}],
        "inputs": [{"format": "text"}],
        "outputs": [{"format": "text"}],
    }
    metrics = [
        {"type": name, "value": str(value), "slice": _slice(name)}
        for name, value in sorted(as_map(ev.results.get("eval")).items())
        if isinstance(value, (int, float))
    ]
    card: dict[str, Any] = {"bom-ref": f"{ADAPTER_REF}:model-card", "modelParameters": parameters}
    if metrics:
        card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    properties = [{"name": "bundler:adapter-parameters", "value": str(ev.adapter_parameters())}]
    if isinstance(base.value, int):
        properties.append({"name": "bundler:base-parameters", "value": str(base.value)})
    card["properties"] = properties
    return card


def _slice(metric: str) -> str:
    return "val" if metric.startswith("val") else "test"
