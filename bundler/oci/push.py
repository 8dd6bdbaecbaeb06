"""Push an exported bundle to a registry as an OCI artifact (layout: bundler/oci/__init__.py)."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.bundle.bag import RUNS, list_runs
from bundler.bundle.hashing import CHUNK, canonical_json
from bundler.errors import BlobDigestMismatchError, OciReferenceError, RegistryRequestError
from bundler.oci import (
    ADAPTER_MEDIA_TYPES,
    ARTIFACT_TYPE,
    BUNDLE_FORMAT,
    BUNDLE_ID,
    BUNDLE_LAYER,
    EMPTY_CONFIG,
    EMPTY_MEDIA_TYPE,
    FILEPATH,
    MANIFEST_MEDIA_TYPE,
    RUN_ID,
    RUN_IDS,
    SIGSTORE_BUNDLE,
    TITLE,
)
from bundler.oci.client import container_name, refused, registry_client
from bundler.oci.reference import parse_reference


@dataclass(frozen=True)
class OciPushResult:
    reference: str
    digest: str
    bundle_id: str
    runs: list[str]
    layers: int
    bytes: int
    tar_sha256: str

    def as_dict(self) -> dict[str, object]:
        return {"schema": "bundler.export-oci/1", **self.__dict__}


def push_bundle(bundle: Path, target: str) -> OciPushResult:
    """Export `bundle` (verified) and push it to `target` as an artifact; return the manifest digest."""
    # deferred: it loads cryptography, which callers that never reach this line should not pay for
    from bundler.bundle.archive import export_bundle, top_directory

    ref = parse_reference(target)
    if ref.digest:
        raise OciReferenceError(target, "a push names a tag (or nothing), never a digest: the digest is the result")
    client = registry_client(ref)
    container = client.get_container(container_name(ref))
    with tempfile.TemporaryDirectory(prefix="bundler-oci-") as work:
        exported = export_bundle(bundle, Path(work) / "bundle.tar")
        empty = Path(work) / "empty.json"
        empty.write_bytes(EMPTY_CONFIG)
        config = _descriptor(empty, EMPTY_MEDIA_TYPE)
        title = top_directory(exported.bundle_id) + ".tar"
        layers = [_descriptor(exported.archive, BUNDLE_LAYER, {TITLE: title})]
        sources = {layers[0]["digest"]: exported.archive}
        runs = list_runs(bundle)
        for run_id in runs:
            for path in _adapter_files(bundle / RUNS / run_id):
                rel = path.relative_to(bundle).as_posix()
                media = SIGSTORE_BUNDLE if path.name == "model.sig" else ADAPTER_MEDIA_TYPES.get(
                    path.name, "application/vnd.cncf.model.weight.config.v1.raw")  # fmt: skip
                layers.append(_descriptor(path, media, {TITLE: path.name, FILEPATH: rel, RUN_ID: run_id}))
                sources[layers[-1]["digest"]] = path
        for descriptor, path in [(config, empty), *((d, sources[d["digest"]]) for d in layers)]:
            try:
                # chunked: oras' monolithic upload reads the whole blob into memory first.
                response = client.upload_blob(str(path), container, descriptor, do_chunked=True)
            except ValueError as exc:  # oras raises ValueError("Issue with <url>: <reason>") on a refused chunk
                raise RegistryRequestError(str(ref), f"the upload of blob {descriptor['digest'][:19]}", 0,
                                           str(exc)[:300]) from None  # fmt: skip
            if response.status_code not in (200, 201, 202):
                raise refused(ref, f"the upload of blob {descriptor['digest'][:19]}", response)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": ARTIFACT_TYPE,
            "config": config,
            "layers": layers,
            "annotations": {
                BUNDLE_ID: exported.bundle_id,
                BUNDLE_FORMAT: "bundler/1",
                RUN_IDS: ",".join(sorted(runs)),
                TITLE: title,
            },
        }
        body = canonical_json(manifest).encode("utf-8")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        url = f"{client.prefix}://{container.manifest_url(ref.tag or digest)}"
        response = client.do_request(url, "PUT", data=body, headers={"Content-Type": MANIFEST_MEDIA_TYPE})
        if response.status_code not in (200, 201):
            raise refused(ref, "the manifest", response)
        served = response.headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise BlobDigestMismatchError(str(ref), digest, served)
        total = sum(int(d["size"]) for d in layers)
        return OciPushResult(str(ref.pinned(digest)), digest, exported.bundle_id, runs, len(layers), total,
                             exported.sha256)  # fmt: skip


def _adapter_files(run_dir: Path) -> list[Path]:
    adapter = run_dir / "adapter"
    files = sorted(p for p in adapter.iterdir() if p.is_file()) if adapter.is_dir() else []
    return files + ([run_dir / "model.sig"] if (run_dir / "model.sig").is_file() else [])


def _descriptor(path: Path, media_type: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    descriptor: dict[str, Any] = {
        "mediaType": media_type,
        "digest": "sha256:" + digest.hexdigest(),
        "size": path.stat().st_size,
    }
    if annotations:
        descriptor["annotations"] = annotations
    return descriptor
