"""Streaming digests of files and trees (parallel), BagIt manifest lines, and canonical JSON."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# hashlib releases the GIL for updates over 2 KiB, so threads hash files in parallel at the
# SHA-NI rate of each core; 4 MiB chunks keep memory flat for files of any size.
CHUNK = 4 * 1024 * 1024
# The manifest algorithms RFC 8493 section 2.4 names; a manifest of any other algorithm cannot be checked.
ALGORITHMS = ("md5", "sha1", "sha256", "sha512")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    """Return the hex sha256 of a file, read in streaming chunks."""
    return digest_file(path, ("sha256",))["sha256"]


def digest_file(path: Path | str, algorithms: Iterable[str]) -> dict[str, str]:
    """Return {algorithm: hex digest} of a file, every algorithm fed from one streaming read."""
    digests = {alg: hashlib.new(alg) for alg in algorithms}
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        while True:
            size = handle.readinto(buffer)
            if not size:
                break
            for digest in digests.values():
                digest.update(view[:size])
    return {alg: d.hexdigest() for alg, d in digests.items()}


def digest_files(paths: Iterable[Path], algorithms: Iterable[str]) -> dict[Path, dict[str, str]]:
    """digest_file over many files in parallel threads, largest first."""
    paths, algorithms = list(paths), tuple(algorithms)
    if not paths:
        return {}
    ordered = sorted(paths, key=lambda p: -p.stat().st_size)
    with ThreadPoolExecutor(max_workers=min(len(paths), max(2, os.cpu_count() or 2))) as pool:
        return dict(zip(ordered, pool.map(lambda p: digest_file(p, algorithms), ordered), strict=True))


def hash_files(paths: Iterable[Path], workers: int | None = None) -> dict[Path, str]:
    """Hash many files in parallel threads; return {path: sha256}."""
    paths = list(paths)
    if not paths:
        return {}
    workers = workers or min(len(paths), max(2, os.cpu_count() or 2))
    # Largest first so one big file does not start last and leave a core idle.
    ordered = sorted(paths, key=lambda p: -p.stat().st_size)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(ordered, pool.map(sha256_file, ordered), strict=True))


def list_files(root: Path) -> list[Path]:
    """Every regular file under root, sorted by POSIX relative path; symlinks are not followed."""
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in files:
            found.append(Path(directory) / name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def hash_tree(root: Path, prefix: str = "") -> dict[str, str]:
    """Return {prefix + relative posix path: sha256} for every file under root."""
    hashes = hash_files(list_files(root))
    return {prefix + path.relative_to(root).as_posix(): sha for path, sha in sorted(hashes.items())}


def encode_path(path: str) -> str:
    """Percent-encode a manifest path as RFC 8493 section 2.1.3 asks: %, CR and LF, and only those."""
    return path.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def decode_path(text: str) -> str:
    """Undo encode_path (%25, %0D, %0A, either case); any other % sequence is left as it is."""
    return re.sub(r"%(25|0[dD]|0[aA])", lambda m: {"25": "%", "0d": "\r", "0a": "\n"}[m.group(1).lower()], text)


def manifest_lines(hashes: Mapping[str, str]) -> str:
    """BagIt manifest text: "<digest>  <path>" lines sorted by path, paths percent-encoded, LF endings."""
    return "".join(f"{hashes[path]}  {encode_path(path)}\n" for path in sorted(hashes))


def canonical_json(obj: Any) -> str:
    """The one JSON form bundler writes: sorted keys, 2-space indent, UTF-8, trailing LF."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
