"""The lockfile format (pip-compile `name==version --hash=sha256:...`): parse, name, hash; no resolving."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bundler.bundle.hashing import sha256_file
from bundler.errors import InputError


@dataclass(frozen=True)
class LockedRequirement:
    """One pinned distribution: name, exact version (local label kept) and allowed hashes."""

    name: str
    version: str
    hashes: tuple[str, ...]
    marker: str = ""


def canonical_name(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_header_input_sha(lock_path: Path) -> str | None:
    """The input sha256 recorded in a lock's header, or None when it records none."""
    with open(lock_path, encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            match = re.match(r"^#\s*input-sha256:\s*([0-9a-f]{64})\s*$", line)
            if match:
                return match.group(1)
    return None


def lock_sha256(lock_path: Path) -> str:
    """sha256 of the lock file's bytes (what image labels and bundles record)."""
    return sha256_file(lock_path)


def parse_lock(lock_path: Path) -> list[LockedRequirement]:
    """Read a pip-compile lock: `name==version [; marker] \\ --hash=sha256:...`, sorted by name."""
    return parse_lock_text(lock_path.read_text(encoding="utf-8"), lock_path)


def parse_lock_text(text: str, where: Path | str = "requirements.lock") -> list[LockedRequirement]:
    """Parse lock text (see parse_lock)."""
    logical = re.sub(r"\\\n", " ", text)
    pins = []
    for raw in logical.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        hashes = tuple(sorted(re.findall(r"--hash=sha256:([0-9a-f]{64})", line)))
        spec = re.sub(r"--hash=\S+", "", line).strip()
        spec, _, marker = (part.strip() for part in spec.partition(";"))
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)$", spec)
        if not match:
            raise InputError(
                f"{where}: not a pinned requirement: {spec!r}",
                "the lock must come from `bundler lock`; run it again",
            )
        pins.append(LockedRequirement(canonical_name(match.group(1)), match.group(3), hashes, marker))
    return sorted(pins, key=lambda p: p.name)
