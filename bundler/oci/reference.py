"""oci://HOST[:PORT]/REPO[:TAG][@sha256:DIGEST]: the one grammar bundler accepts for a registry artifact."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from bundler.errors import OciReferenceError
from bundler.oci import SCHEME

_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$")


@dataclass(frozen=True)
class OciReference:
    """oci://HOST[:PORT]/REPO[:TAG][@sha256:DIGEST], parsed."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        return (
            SCHEME
            + self.registry
            + "/"
            + self.repository
            + (f":{self.tag}" if self.tag else "")
            + (f"@{self.digest}" if self.digest else "")
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
        if not DIGEST.match(digest):
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
