"""Base-image catalog (images/*.toml), tag -> digest through the registry API, image.lock.json."""

from __future__ import annotations

import difflib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import tomllib

from bundler import ui
from bundler.bundle.atomic import atomic_write_text
from bundler.errors import InputError, UnknownImageError
from bundler.paths import resource_dir
from bundler.recipe.config import EnvironmentConfig

IMAGE_LOCK_SCHEMA = "bundler.image/1"
PLATFORM = {"os": "linux", "architecture": "amd64"}

# Accept headers a registry needs to return a manifest list / OCI index rather than a v1 schema.
_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
_LIST_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class CatalogImage:
    """One entry of images/: a base image and what it carries."""

    name: str
    reference: str
    cuda: str
    python: str
    torch_index: str
    min_driver: str
    digest: str | None = None
    python_bin: str = "python3"


@dataclass(frozen=True)
class ImageReference:
    """A parsed `registry/repository:tag` reference."""

    registry: str
    repository: str
    tag: str

    @property
    def is_local(self) -> bool:
        host = self.registry.split(":")[0]
        return host in {"127.0.0.1", "localhost"}

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


def parse_reference(reference: str) -> ImageReference:
    """Split a reference the way the Docker CLI does (docker.io and library/ filled in)."""
    ref = reference.split("@", 1)[0]
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        name, tag = ref, "latest"
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = "docker.io", name
    if registry == "docker.io" and "/" not in repository:
        repository = f"library/{repository}"
    if not re.fullmatch(r"[a-z0-9]+([._/-][a-z0-9]+)*", repository) or not re.fullmatch(r"[\w][\w.-]{0,127}", tag):
        raise InputError(f"not an image reference: {reference!r}", "use registry/repository:tag")
    return ImageReference(registry, repository, tag)


def load_catalog(directory: Path | None = None) -> dict[str, CatalogImage]:
    """Read every images/*.toml entry, keyed by file stem."""
    folder = directory or resource_dir("images")
    catalog = {}
    for path in sorted(folder.glob("*.toml")):
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        catalog[path.stem] = CatalogImage(name=path.stem, **raw)
    return catalog


def find_image(name_or_reference: str, directory: Path | None = None) -> CatalogImage:
    """Return the catalog entry named (or referenced) by `environment.image`."""
    catalog = load_catalog(directory)
    if name_or_reference in catalog:
        return catalog[name_or_reference]
    for entry in catalog.values():
        if entry.reference == name_or_reference:
            return entry
    raise UnknownImageError(
        name_or_reference,
        sorted(catalog),
        difflib.get_close_matches(name_or_reference, sorted(catalog), n=1),
    )


def _registry_base(ref: ImageReference) -> str:
    host = "registry-1.docker.io" if ref.registry == "docker.io" else ref.registry
    scheme = "http" if ref.is_local else "https"
    return f"{scheme}://{host}/v2/{ref.repository}"


def _get_json(url: str, accept: str, timeout: float) -> tuple[dict, str | None, str]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) only)
        body = response.read()
        return (
            json.loads(body),
            response.headers.get("Docker-Content-Digest"),
            response.headers.get_content_type(),
        )


def _sha256(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def resolve_digest(reference: str, *, timeout: float = 10.0) -> dict[str, str | None]:
    """Ask the registry for the tag's manifest(-list) digest and its linux/amd64 manifest digest."""
    ref = parse_reference(reference)
    base = _registry_base(ref)
    url = f"{base}/manifests/{urllib.parse.quote(ref.tag)}"
    request = urllib.request.Request(url, headers={"Accept": _ACCEPT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = response.read()
            header_digest = response.headers.get("Docker-Content-Digest")
            media_type = response.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 401):
            raise UnknownImageError(reference, [], [], registry_said=f"HTTP {exc.code}") from None
        raise
    top_digest = header_digest or _sha256(body)
    manifest = json.loads(body)
    media_type = manifest.get("mediaType", media_type)
    if media_type not in _LIST_TYPES:
        return {"index_digest": None, "manifest_digest": top_digest}
    for item in manifest.get("manifests", []):
        platform = item.get("platform", {})
        if platform.get("os") == PLATFORM["os"] and platform.get("architecture") == PLATFORM["architecture"]:
            return {"index_digest": top_digest, "manifest_digest": item["digest"]}
    raise UnknownImageError(reference, [], [], registry_said="no linux/amd64 manifest in its manifest list")


def local_tag_digest(reference: str) -> str | None:
    """The digest a local registry's tag points at now (a machine-built base image); None for remote ones."""
    try:
        if not parse_reference(reference).is_local:
            return None
        return resolve_digest(reference, timeout=5.0)["manifest_digest"]
    except (OSError, ValueError, InputError):  # the caller then gives its general advice
        return None


def image_lock_record(env: EnvironmentConfig, *, offline: bool, directory: Path | None = None) -> dict:
    """Build the image.lock.json record (reference, digests, cuda); never the local image ID."""
    entry = find_image(env.image, directory)
    source = "registry"
    if offline:
        digests = _catalog_digests(entry, "offline")
        source = "catalog"
    else:
        try:
            digests = resolve_digest(entry.reference)
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                raise
            digests = _catalog_digests(entry, f"registry unreachable ({_reason(exc)})")
            source = "catalog"
    pin = digests["index_digest"] or digests["manifest_digest"]
    return {
        "schema": IMAGE_LOCK_SCHEMA,
        "name": entry.name,
        "reference": entry.reference,
        "digest": pin,
        "index_digest": digests["index_digest"],
        "manifest_digest": digests["manifest_digest"],
        "platform": "linux/amd64",
        "cuda": entry.cuda,
        "python": entry.python,
        "python_bin": entry.python_bin,
        "torch_index": entry.torch_index,
        "min_driver": entry.min_driver,
        "digest_source": source,
    }


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", exc))


def _catalog_digests(entry: CatalogImage, why: str) -> dict[str, str | None]:
    if not entry.digest:
        raise InputError(
            f"{entry.reference}: cannot pin the base image ({why}) and images/{entry.name}.toml records no digest",
            'run `bundler lock` where the registry answers, or add `digest = "sha256:..."` to the catalog entry',
        )
    if not _DIGEST.match(entry.digest):
        raise InputError(f"images/{entry.name}.toml: digest {entry.digest!r} is not sha256:<64 hex>")
    ui.warn(f"{why}: pinning {entry.reference} to the catalog digest {entry.digest}")
    return {"index_digest": entry.digest, "manifest_digest": entry.digest}


def image_lock_text(record: dict) -> str:
    """Canonical JSON text of an image lock record."""
    return json.dumps(record, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_image_lock(project_dir: Path, env: EnvironmentConfig, *, offline: bool) -> dict:
    """Resolve the base image and write <project>/image.lock.json atomically; return the record."""

    record = image_lock_record(env, offline=offline)
    atomic_write_text(project_dir / "image.lock.json", image_lock_text(record))
    return record
