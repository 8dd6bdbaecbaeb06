"""Bundles in OCI registries: push an export tar as an artifact, fetch it back by digest, verified.

The artifact (an OCI image manifest with an artifactType, as ORAS and CNCF ModelPack write them):
- config: the OCI empty descriptor ({}), as the OCI artifacts guidance asks when there is no config;
- layer 1: the export tar, byte-identical to `bundler export BUNDLE -o FILE.tar`;
- then each run's adapter files as layers of their own, with CNCF ModelPack media types (weights, weight
  config) and `org.cncf.model.filepath`, and model.sig as a Sigstore bundle, so registry tools and
  ModelPack-aware runtimes see the adapter without unpacking the tar;
- annotations: Bundle-Id, format and run IDs, nothing time- or host-dependent, so the same bundle gives
  the same manifest bytes, hence the same digest, on any machine and any day.

Fetching trusts nothing the registry says: the manifest must hash to the digest asked for, every blob
is hashed while it streams and cut off past its declared size, and the tar then goes through exactly
the checks of a local tar (bundle.archive.import_bundle / verify_archive).

The HTTP side is oras-py's Registry (auth from docker's config.json, the distribution API calls);
bundler replaces only its retry policy (oras sleeps 3 s to 83 s between five attempts on any error),
and streams blob downloads itself because oras' download_blob checks no digest.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.bundle.hashing import CHUNK, canonical_json
from bundler.errors import (
    BlobDigestMismatchError,
    NotABundleError,
    OciReferenceError,
    RegistryRequestError,
    RegistryUnavailableError,
)

SCHEME = "oci://"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.bundler.bundle.v1"
BUNDLE_LAYER = "application/vnd.bundler.bundle.v1.tar"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
# CNCF ModelPack (github.com/modelpack/model-spec, docs/spec.md and annotations.md) where they fit.
ADAPTER_MEDIA_TYPES = {
    "adapter_model.safetensors": "application/vnd.cncf.model.weight.v1.raw",
    "adapter_config.json": "application/vnd.cncf.model.weight.config.v1.raw",
}
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
FILEPATH = "org.cncf.model.filepath"
TITLE = "org.opencontainers.image.title"
BUNDLE_ID = "dev.bundler.bundle-id"
BUNDLE_FORMAT = "dev.bundler.bundle-format"
RUN_IDS = "dev.bundler.run-ids"
RUN_ID = "dev.bundler.run-id"
# Credentials: these two, else docker's config.json ($DOCKER_CONFIG or ~/.docker); read at use, never kept.
USERNAME_ENV, PASSWORD_ENV = "BUNDLER_REGISTRY_USERNAME", "BUNDLER_REGISTRY_PASSWORD"
# Hosts spoken to over plain HTTP besides loopback (docker's "insecure-registries"), comma-separated.
INSECURE_ENV = "BUNDLER_REGISTRY_INSECURE"
RETRY_DELAYS_S = (0.5, 2.0, 5.0)
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$")


@dataclass(frozen=True)
class OciReference:
    """oci://HOST[:PORT]/REPO[:TAG][@sha256:DIGEST], parsed."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        return SCHEME + self.registry + "/" + self.repository + (f":{self.tag}" if self.tag else "") + (
            f"@{self.digest}" if self.digest else ""
        )

    def pinned(self, digest: str) -> OciReference:
        return OciReference(self.registry, self.repository, None, digest)


def is_oci(target: str | os.PathLike[str]) -> bool:
    return str(target).startswith(SCHEME)


def parse_reference(text: str) -> OciReference:
    """Parse an oci:// reference; anything the distribution spec's grammar refuses is an OciReferenceError."""
    if not is_oci(text):
        raise OciReferenceError(text, f"not an {SCHEME} reference")
    rest = text[len(SCHEME) :]
    registry, _, path = rest.partition("/")
    digest = None
    if "@" in path:
        path, _, digest = path.partition("@")
        if not _DIGEST.match(digest):
            raise OciReferenceError(text, f"{digest!r} is not a sha256:<64 hex> digest")
    repository, tag = path, None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _, tag = path.rpartition(":")
        if not _TAG.match(tag):
            raise OciReferenceError(text, f"{tag!r} is not a valid tag")
    if not _HOST.match(registry) or not repository or not _REPOSITORY.match(repository):
        raise OciReferenceError(text, "needs a registry host and a lower-case repository name")
    return OciReference(registry, repository, tag, digest)


# --- transport: oras-py with a bounded retry policy ----------------------------------------------


def _client(ref: OciReference) -> Any:
    """An oras Registry for `ref`'s host with credentials from the environment or docker's config.json."""
    import oras.provider
    import requests

    host = ref.registry.split(":")[0].strip("[]")
    insecure = host in ("127.0.0.1", "localhost", "::1") or ref.registry in _insecure_hosts()

    class Registry(oras.provider.Registry):  # type: ignore[misc]
        def do_request(self, url: str, method: str = "GET", data: Any = None, headers: Any = None,
                       json: Any = None, stream: bool = False) -> requests.Response:  # fmt: skip
            # oras' own do_request minus its retry decorator; _retrying bounds the waiting instead.
            unwrapped = oras.provider.Registry.do_request.__wrapped__
            what = f"{method} {url.split('/v2/', 1)[-1].split('?')[0]}"
            try:
                response = _retrying(lambda: unwrapped(self, url, method, data, dict(headers or {}), json, stream))
            except ValueError as exc:  # oras: "Cannot respond to request for authentication."
                raise RegistryRequestError(str(ref), what, 401, str(exc),
                                           _LOGIN_HINT.format(registry=ref.registry)) from None  # fmt: skip
            if response.status_code in (401, 403):  # still refused after oras answered the challenge
                raise _refused(ref, what, response)
            return response

    def _retrying(send: Any) -> requests.Response:
        for attempt, delay in enumerate((*RETRY_DELAYS_S, None), start=1):
            try:
                response = send()
            except (requests.ConnectionError, requests.Timeout) as exc:
                if delay is None:
                    raise RegistryUnavailableError(ref.registry, attempt, _reason(exc)) from None
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    return response
                if delay is None:
                    raise RegistryUnavailableError(ref.registry, attempt, _registry_error(response))
            time.sleep(delay)
        raise AssertionError("unreachable")

    # Which scheme the registry asks for decides the oras auth backend: Basic (htpasswd) or token.
    prefix = "http" if insecure else "https"
    ping = _retrying(lambda: requests.get(f"{prefix}://{ref.registry}/v2/", timeout=30))
    challenge = ping.headers.get("Www-Authenticate", "") if ping.status_code == 401 else ""
    basic = challenge.lower().startswith("basic")
    client = Registry(hostname=ref.registry, insecure=insecure, auth_backend="basic" if basic else "token")
    username, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
    if username and password:
        client.auth.set_basic_auth(username, password)
    else:
        docker_config = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
        if docker_config.is_file():
            client.auth.load_configs(client.get_container(_container_name(ref)), configs=[str(docker_config)])
        if not getattr(client.auth, "_basic_auth", None) and basic:
            client.auth.set_basic_auth("", "")  # answers the challenge so the registry's 401 is what we report
    return client


def _insecure_hosts() -> set[str]:
    return {h.strip() for h in os.environ.get(INSECURE_ENV, "").split(",") if h.strip()}


def _container_name(ref: OciReference) -> str:
    return f"{ref.registry}/{ref.repository}" + (f"@{ref.digest}" if ref.digest else f":{ref.tag or 'latest'}")


def _reason(exc: BaseException) -> str:
    text = str(exc)
    found = re.search(r"\[Errno [^\]]+\][^')\"]*|Connection refused|timed out|Name or service not known", text)
    return f"{type(exc).__name__}: {found.group(0) if found else text[:200]}"


def _registry_error(response: Any) -> str:
    """The registry's own error: its OCI error body (code: message), else the status line."""
    try:
        errors = response.json().get("errors") or []
        parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)]
        if parts:
            return "; ".join(parts)[:300]
    except ValueError:
        pass
    return f"{response.status_code} {response.reason}"


_LOGIN_HINT = f"set {USERNAME_ENV} and {PASSWORD_ENV}, or `docker login {{registry}}`; nothing was written"


def _refused(ref: OciReference, what: str, response: Any) -> RegistryRequestError:
    status = response.status_code
    hint = _LOGIN_HINT.format(registry=ref.registry) if status in (401, 403) else ""
    return RegistryRequestError(str(ref), what, status, _registry_error(response), hint)


# --- push -----------------------------------------------------------------------------------------


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
    from bundler.bundle.archive import export_bundle, top_directory
    from bundler.bundle.bag import RUNS, list_runs

    ref = parse_reference(target)
    if ref.digest:
        raise OciReferenceError(target, "a push names a tag (or nothing), never a digest: the digest is the result")
    client = _client(ref)
    container = client.get_container(_container_name(ref))
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
                raise _refused(ref, f"the upload of blob {descriptor['digest'][:19]}", response)
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
            raise _refused(ref, "the manifest", response)
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


# --- fetch ----------------------------------------------------------------------------------------


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

    container = client.get_container(_container_name(ref))
    url = f"{client.prefix}://{container.manifest_url(ref.digest or ref.tag or 'latest')}"
    response = client.do_request(url, "GET", headers={"Accept": MANIFEST_MEDIA_TYPE}, stream=True)
    with response:
        if response.status_code != 200:
            raise _refused(ref, "the manifest", response)
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
        and bool(_DIGEST.match(d["digest"]))
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
    container = client.get_container(_container_name(ref))
    digest, size = descriptor["digest"], descriptor["size"]
    response = client.get_blob(container, digest, stream=True)
    with response:
        if response.status_code != 200:
            raise _refused(ref, f"blob {digest[:19]}", response)
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
        raise RegistryUnavailableError(response.url.split("/v2/")[0], 1, _reason(exc)) from None


@dataclass(frozen=True)
class PulledBundle:
    """An artifact fetched and checked; `tar` lives in a temp dir removed when the context ends."""

    artifact: ResolvedArtifact
    tar: Path


class pulled_bundle:  # noqa: N801 - a context manager read as a noun: `with pulled_bundle(...) as pulled`
    """Fetch oci://...@sha256:... into a temp dir under `near`, every blob checked; remove it on exit."""

    def __init__(self, target: str, *, allow_tag: bool, near: Path | None = None, max_bytes: int | None = None):
        self.ref = parse_reference(target)
        self.allow_tag = allow_tag
        self.near = near
        self.max_bytes = max_bytes
        self.work: Path | None = None

    def __enter__(self) -> PulledBundle:
        client = _client(self.ref)
        artifact = resolve(client, self.ref, allow_tag=self.allow_tag)
        total = sum(d["size"] for d in artifact.manifest["layers"])
        if self.max_bytes is not None and total > self.max_bytes:
            raise NotABundleError(str(artifact.reference), f"its layers hold {total} bytes, over the limit")
        self.work = Path(tempfile.mkdtemp(prefix=".bundler-oci-", dir=self.near))
        try:
            tar = self.work / "bundle.tar"
            with open(tar, "wb") as sink:
                fetch_blob(client, artifact, artifact.bundle_layer, sink)
            for descriptor in artifact.manifest["layers"]:
                if descriptor is not artifact.bundle_layer:
                    fetch_blob(client, artifact, descriptor, None)
        except BaseException:
            self.__exit__()
            raise
        return PulledBundle(artifact, tar)

    def __exit__(self, *exc: object) -> None:
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)
            self.work = None


def layer_findings(artifact: ResolvedArtifact, payload: dict[str, str]) -> list[str]:
    """Each adapter layer must be the very file its filepath annotation names in the bundle's manifest."""
    findings = []
    for descriptor in artifact.manifest["layers"]:
        path = (descriptor.get("annotations") or {}).get(FILEPATH)
        if path is None:
            continue
        want = payload.get(path)
        if want is None:
            findings.append(f"layer {descriptor['digest'][:19]} names {path}, which the bundle does not hold")
        elif "sha256:" + want != descriptor["digest"]:
            findings.append(f"layer {descriptor['digest'][:19]} differs from {path} in the bundle")
    return findings


def import_from_registry(target: str, out: Path, limits: Any, *, allow_tag: bool) -> tuple[Any, ResolvedArtifact]:
    """Fetch a bundle by digest and import it as `bundler import FILE.tar` would; nothing left at `out` on failure."""
    from bundler.bundle.archive import import_bundle
    from bundler.bundle.bag import payload_hashes
    from bundler.errors import OutputExistsError, VerifyFailed

    out = out.resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(out)
    existed = out.exists()
    near = next(p for p in [out.parent, *out.parents] if p.exists())
    with pulled_bundle(target, allow_tag=allow_tag, near=near, max_bytes=limits.max_total_bytes) as pulled:
        report = import_bundle(pulled.tar, out, limits)
        findings = layer_findings(pulled.artifact, payload_hashes(out))
        if findings:
            shutil.rmtree(out)
            if existed:
                out.mkdir()
            raise VerifyFailed(Path(str(pulled.artifact.reference)), findings)
        return report, pulled.artifact


def verify_from_registry(target: str, *, allow_tag: bool) -> tuple[Any, ResolvedArtifact]:
    """Fetch a bundle by digest and verify it exactly as `bundler verify FILE.tar` would, extracting nothing."""
    from bundler.bundle.archive import verify_archive

    with pulled_bundle(target, allow_tag=allow_tag) as pulled:
        report = verify_archive(pulled.tar)
        report.findings += layer_findings(pulled.artifact, _tar_payload(pulled.tar))
        return report, pulled.artifact


def _tar_payload(tar: Path) -> dict[str, str]:
    """The payload manifest inside an export tar that verify_archive already judged sane."""
    import tarfile

    from bundler.bundle.bag import MANIFEST, parse_manifest

    with tarfile.open(tar, mode="r:") as archive:
        for member in archive:
            if member.isreg() and member.name.count("/") == 1 and member.name.endswith("/" + MANIFEST):
                handle = archive.extractfile(member)
                text = handle.read(MAX_MANIFEST_BYTES * 16).decode("utf-8", errors="replace") if handle else ""
                return parse_manifest(text, MANIFEST)
    return {}
