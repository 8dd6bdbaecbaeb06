"""What verify found: typed findings (kind, path, detail), never strings to grep.

Kinds, by the layer that reports them:

    BagIt 1.0 (RFC 8493)   bagit-declaration, tag-encoding, bag-info, manifest-syntax, manifest-duplicate,
                           unsupported-algorithm, fetch, out-of-scope-path, missing-file, extra-file,
                           renamed-file, changed-file, not-listed, payload-oxum, not-regular
    bundle (bundler/1)     bundle-id, run-id, run-layout, statement, vendor
    signatures             signature, untrusted, not-signed, signed-changed, signed-missing,
                           unsigned-addition (a failure only with --strict)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Finding:
    """One thing verify found wrong: what kind of rule, which bag-relative file, and what exactly."""

    kind: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}" if self.path else self.detail

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "path": self.path, "detail": self.detail}
