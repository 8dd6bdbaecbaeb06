"""Fetch a bundle from a registry by digest: every blob hashed while it streams, then the local tar checks.

The tar goes through exactly bundle.archive's public entry points (import_bundle, verify_archive), so a
pulled bundle and a local .tar get the same verdict; nothing the registry says is trusted before that.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.bundle.finding import Finding
from bundler.bundle.hashing import CHUNK
from bundler.errors import (
    BlobDigestMismatchError,
    NotABundleError,
    OciReferenceError,
    OutputExistsError,
    RegistryUnavailableError,
    VerifyFailed,
)
from bundler.oci import ARTIFACT_TYPE, BUNDLE_LAYER, FILEPATH, MANIFEST_MEDIA_TYPE
from bundler.oci.client import container_name, reason, refused, registry_client
from bundler.oci.reference import DIGEST, OciReference, parse_reference

MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ResolvedArtifact:
    """A manifest fetched and checked against its digest: the pinned reference and its layers."""

    reference: OciReference
    digest: str
    by_tag: bool
    manifest: dict[str, Any]

    @property
    def bundle_layer(self) -> dict[str, Any]:
        return next(d for d in self.manifest["layers"] if d.get("mediaType") == BUNDLE_LAYER)


def resolve(client: Any, ref: OciReference, *, allow_tag: bool) -> ResolvedArtifact:
    """Fetch the manifest, check it hashes to the digest asked for (or pin a tag to its digest)."""
    import json

    container = client.get_container(container_name(ref))
    url = f"{client.prefix}://{container.manifest_url(ref.digest or ref.tag or 'latest')}"
    response = client.do_request(url, "GET", headers={"Accept": MANIFEST_MEDIA_TYPE}, stream=True)
    with response:
        if response.status_code != 200:
            raise refused(ref, "the manifest", response)
        body = _read_bounded(response, MAX_MANIFEST_BYTES, str(ref))
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    if ref.digest and digest != ref.digest:
        raise BlobDigestMismatchError(str(ref), ref.digest, digest)
    if not ref.digest and not allow_tag:
        raise OciReferenceError(
            str(ref),
            f"refused: fetched by tag alone; the tag now points at {digest}",
            f"pin it: {ref.pinned(digest)} (or pass --allow-tag to accept what the tag points at now)",
        )
    try:
        manifest = json.loads(body)
        layers = manifest["layers"]
        ok = isinstance(layers, list) and all(_is_descriptor(d) for d in layers)
    except (ValueError, KeyError, TypeError):
        ok, manifest = False, {}
    if not ok or manifest.get("artifactType") != ARTIFACT_TYPE or [
        d["mediaType"] for d in layers
    ].count(BUNDLE_LAYER) != 1:  # fmt: skip
        kind = manifest.get("artifactType") or manifest.get("config", {}).get("mediaType", "unknown")
        raise NotABundleError(str(ref.pinned(digest)), f"the artifact is a {kind!r}, not a {ARTIFACT_TYPE!r}")
    return ResolvedArtifact(ref.pinned(digest), digest, not ref.digest, manifest)


def _is_descriptor(d: Any) -> bool:
    return (
        isinstance(d, dict)
        and isinstance(d.get("mediaType"), str)
        and isinstance(d.get("size"), int)
        and 0 <= d["size"]
        and isinstance(d.get("digest"), str)
        and bool(DIGEST.match(d["digest"]))
    )


def _read_bounded(response: Any, limit: int, where: str) -> bytes:
    data = bytearray()
    for chunk in response.iter_content(chunk_size=CHUNK):
        data += chunk
        if len(data) > limit:
            raise NotABundleError(where, f"the manifest is larger than {limit} bytes")
    return bytes(data)


def fetch_blob(client: Any, artifact: ResolvedArtifact, descriptor: dict[str, Any], sink: Any) -> None:
    """Stream one blob into `sink` (a binary file or None), hashing as it goes; stop past its declared size."""
    ref = artifact.reference
    container = client.get_container(container_name(ref))
    digest, size = descriptor["digest"], descriptor["size"]
    response = client.get_blob(container, digest, stream=True)
    with response:
        if response.status_code != 200:
            raise refused(ref, f"blob {digest[:19]}", response)
        hasher, seen = hashlib.sha256(), 0
        for chunk in _chunks(response):
            seen += len(chunk)
            if seen > size:
                raise BlobDigestMismatchError(str(ref), digest, f"more than the declared {size} bytes")
            hasher.update(chunk)
            if sink is not None:
                sink.write(chunk)
    found = "sha256:" + hasher.hexdigest()
    if found != digest or seen != size:
        raise BlobDigestMismatchError(str(ref), digest, found)


def _chunks(response: Any) -> Iterator[bytes]:
    import requests

    try:
        yield from response.iter_content(chunk_size=CHUNK)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise RegistryUnavailableError(response.url.split("/v2/")[0], 1, reason(exc)) from None


@dataclass(frozen=True)
class PulledBundle:
    """An artifact fetched and checked; `tar` lives in a temp dir removed when the context ends."""

    artifact: ResolvedArtifact
    tar: Path


@contextlib.contextmanager
def pulled_bundle(
    target: str, *, allow_tag: bool, near: Path | None = None, max_bytes: int | None = None
) -> Iterator[PulledBundle]:
    """Fetch oci://...@sha256:... into a temp dir under `near`, every blob checked; remove it on exit."""
    ref = parse_reference(target)
    client = registry_client(ref)
    artifact = resolve(client, ref, allow_tag=allow_tag)
    total = sum(d["size"] for d in artifact.manifest["layers"])
    if max_bytes is not None and total > max_bytes:
        raise NotABundleError(str(artifact.reference), f"its layers hold {total} bytes, over the limit of {max_bytes}")
    work = Path(tempfile.mkdtemp(prefix=".bundler-oci-", dir=near))
    try:
        tar = work / "bundle.tar"
        with open(tar, "wb") as sink:
            fetch_blob(client, artifact, artifact.bundle_layer, sink)
        for descriptor in artifact.manifest["layers"]:
            if descriptor is not artifact.bundle_layer:
                fetch_blob(client, artifact, descriptor, None)
        yield PulledBundle(artifact, tar)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def layer_findings(artifact: ResolvedArtifact, hashed: dict[str, str]) -> list[Finding]:
    """Each adapter layer must be the very file its filepath annotation names in the bundle (kind "changed-file")."""
    findings = []
    for descriptor in artifact.manifest["layers"]:
        path = (descriptor.get("annotations") or {}).get(FILEPATH)
        if path is None:
            continue
        want = hashed.get(path)
        layer = f"registry layer {descriptor['digest'][:19]}"
        if want is None:
            findings.append(Finding("missing-file", str(path), f"{layer} names it, the bundle does not hold it"))
        elif "sha256:" + want != descriptor["digest"]:
            findings.append(Finding("changed-file", str(path), f"{layer} differs from the bundle's copy"))
    return findings


def import_from_registry(target: str, out: Path, limits: Any, *, allow_tag: bool) -> tuple[Any, ResolvedArtifact]:
    """Fetch a bundle by digest and import it as `bundler import FILE.tar` would; nothing left at `out` on failure."""
    # deferred: it loads cryptography, which callers that never reach this line should not pay for
    from bundler.bundle.archive import import_bundle

    out = out.resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(out)
    existed = out.exists()
    near = next(p for p in [out.parent, *out.parents] if p.exists())
    with pulled_bundle(target, allow_tag=allow_tag, near=near, max_bytes=limits.max_total_bytes) as pulled:
        report = import_bundle(pulled.tar, out, limits)
        findings = layer_findings(pulled.artifact, report.sha256)
        if findings:
            shutil.rmtree(out)
            if existed:
                out.mkdir()
            raise VerifyFailed(Path(str(pulled.artifact.reference)), findings)
        return report, pulled.artifact


def verify_from_registry(target: str, *, allow_tag: bool, **checks: object) -> tuple[Any, ResolvedArtifact]:
    """Fetch a bundle by digest and verify it exactly as `bundler verify FILE.tar` would (same `checks`)."""
    # deferred: it loads cryptography, which callers that never reach this line should not pay for
    from bundler.bundle.archive import verify_archive

    with pulled_bundle(target, allow_tag=allow_tag) as pulled:
        report = verify_archive(pulled.tar, **checks)
        report.bundle = Path(str(pulled.artifact.reference))
        report.findings += layer_findings(pulled.artifact, report.sha256)
        return report, pulled.artifact
