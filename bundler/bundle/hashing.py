"""Streaming sha256 of files and trees (parallel), and canonical JSON."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# hashlib releases the GIL for updates over 2 KiB, so threads hash files in parallel at the
# SHA-NI rate of each core; 4 MiB chunks keep memory flat for files of any size.
CHUNK = 4 * 1024 * 1024


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    """Return the hex sha256 of a file, read in streaming chunks."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        while True:
            size = handle.readinto(buffer)
            if not size:
                break
            digest.update(view[:size])
    return digest.hexdigest()


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


def manifest_lines(hashes: Mapping[str, str]) -> str:
    """BagIt manifest text: "<sha256>  <path>" lines sorted by path, LF endings."""
    return "".join(f"{hashes[path]}  {path}\n" for path in sorted(hashes))


def canonical_json(obj: Any) -> str:
    """The one JSON form bundler writes: sorted keys, 2-space indent, UTF-8, trailing LF."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
