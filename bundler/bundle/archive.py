"""Export a bundle as one byte-reproducible tar, import one safely, and verify one without extracting it.

Export: members sorted, under one top directory named after the bundle ID (BagIt serialization), mtime 0,
uid/gid 0, no owner names, mode 0644/0755, regular files and directories only, PAX format. Nothing about
the machine, the clock or the bundle's path enters the bytes.

Import trusts nothing: every header is read and judged before a byte is written (absolute paths, `..`,
links, devices, duplicates, names equal after Unicode normalization, sizes and counts over the limits),
then the members are streamed into a temp directory beside --out, verified, and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bundler.bundle.atomic import atomic_dir
from bundler.bundle.bag import PAYLOAD, RECIPE, SUPPORTED_FORMATS, bundle_id_of, parse_bag_info
from bundler.bundle.hashing import CHUNK, list_files
from bundler.bundle.verify import VENDOR_RECORDS, VerifyReport, check_bag, require_verified, verify_bundle
from bundler.errors import InputError, NotABundleError, OutputExistsError, UnsafeArchiveError, VerifyFailed

EXPORT_SCHEMA = "bundler.export/1"
# Small text files verify needs to read while streaming a tar (tag files and the recipe records that name
# vendored files); anything larger than this cannot be a genuine one.
_TEXT_LIMIT = 64 * 1024 * 1024
_TEXT_FILES = {f"{RECIPE}/{record}" for record in VENDOR_RECORDS.values()}


@dataclass(frozen=True)
class ImportLimits:
    """What an archive may hold; over any of them the whole archive is refused before anything is written."""

    max_members: int = 200_000
    max_member_bytes: int = 512 * 1024**3
    max_total_bytes: int = 2 * 1024**4


@dataclass(frozen=True)
class ExportResult:
    archive: Path
    bundle_id: str
    sha256: str
    members: int
    bytes: int

    def as_dict(self) -> dict[str, object]:
        return {
            "schema": EXPORT_SCHEMA,
            "archive": str(self.archive),
            "bundle_id": self.bundle_id,
            "sha256": self.sha256,
            "members": self.members,
            "bytes": self.bytes,
        }


def top_directory(bundle_id: str) -> str:
    """The one top-level directory of an export: named by content, never by the path it was exported from."""
    return f"bundle-{bundle_id[:16]}"


def _member(name: str, kind: bytes, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def export_bundle(bundle: Path, archive: Path) -> ExportResult:
    """Write `bundle` (verified first) as a deterministic tar at `archive`, atomically."""
    require_verified(bundle)
    bundle_id = bundle_id_of(bundle)
    top = top_directory(bundle_id)
    for path in [bundle, *bundle.rglob("*")]:
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            raise InputError(f"{path} is not a regular file or directory", "a bundle holds only files and directories")
    files = list_files(bundle)
    dirs = {
        Path(*f.relative_to(bundle).parts[:i]).as_posix()
        for f in files
        for i in range(1, len(f.relative_to(bundle).parts))
    }
    entries: list[tuple[str, Path | None]] = sorted(
        [(d, None) for d in dirs] + [(f.relative_to(bundle).as_posix(), f) for f in files],
        key=lambda entry: entry[0],
    )
    archive = archive.resolve()
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.parent / f".{archive.name}.{os.getpid()}.partial"
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as raw:
            sink = _HashingWriter(raw, digest)
            with tarfile.TarFile(
                fileobj=sink,  # type: ignore[arg-type]
                mode="w",
                format=tarfile.PAX_FORMAT,
                encoding="utf-8",
                copybufsize=CHUNK,
            ) as tar:
                tar.addfile(_member(top, tarfile.DIRTYPE))
                for rel, source in entries:
                    if source is None:
                        tar.addfile(_member(f"{top}/{rel}", tarfile.DIRTYPE))
                        continue
                    with open(source, "rb") as handle:
                        tar.addfile(_member(f"{top}/{rel}", tarfile.REGTYPE, os.fstat(handle.fileno()).st_size), handle)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, archive)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportResult(archive, bundle_id, digest.hexdigest(), len(entries) + 1, archive.stat().st_size)


class _HashingWriter:
    """A write-only file object that hashes what passes through it (so export reports the tar's sha256)."""

    def __init__(self, raw, digest):  # type: ignore[no-untyped-def]
        self.raw = raw
        self.digest = digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.raw.tell()


# --- reading untrusted archives -----------------------------------------------------------------


def _open_tar(archive: Path) -> tuple[tarfile.TarFile, list[tarfile.TarInfo]]:
    """Open an archive and read every header; damage or truncation is an input error, not a traceback."""
    if not archive.is_file():
        raise InputError(f"{archive} does not exist or is not a file", "pass the .tar written by `bundler export`")
    try:
        tar = tarfile.open(archive, mode="r:")
        members = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError) as exc:
        raise _damaged(archive, exc) from None
    if not _has_end_marker(archive, members):
        tar.close()
        raise _damaged(archive, EOFError("no end-of-archive marker after the last member"))
    return tar, members


def _has_end_marker(archive: Path, members: list[tarfile.TarInfo]) -> bool:
    """True when two zero blocks follow the last member: tarfile accepts a tar cut between members."""
    end = 0
    if members:
        last = members[-1]
        end = last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    with open(archive, "rb") as handle:
        handle.seek(end)
        return handle.read(2 * tarfile.BLOCKSIZE) == bytes(2 * tarfile.BLOCKSIZE)


def _damaged(archive: Path, exc: BaseException) -> InputError:
    return InputError(
        f"{archive} is not a readable tar ({type(exc).__name__}: {exc}); it may be truncated or damaged",
        "copy the archive again from its source and check its sha256 (printed by `bundler export`)",
    )


def check_members(archive: Path, members: list[tarfile.TarInfo], limits: ImportLimits) -> str:
    """Refuse an archive `bundler export` could not have made (every problem listed); return its top dir."""
    problems: list[str] = []
    if len(members) > limits.max_members:
        problems.append(f"{len(members)} members, more than the limit of {limits.max_members}")
    seen: dict[str, str] = {}
    kinds: dict[str, bytes] = {}
    total = 0
    for member in members:
        name = member.name
        shown = repr(name)
        if member.issym() or member.islnk():
            problems.append(f"{shown} is a {'symbolic' if member.issym() else 'hard'} link to {member.linkname!r}")
            continue
        if not (member.isreg() or member.isdir()):
            problems.append(f"{shown} is not a regular file or directory (type {member.type!r})")
            continue
        parts = name.split("/")
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            problems.append(f"{shown} is an absolute path")
        elif any(part in ("", ".", "..") for part in parts):
            problems.append(f"{shown} has an empty, '.' or '..' component")
        elif "\\" in name or "\0" in name or any(ord(c) < 32 for c in name):
            problems.append(f"{shown} holds a backslash or control character")
        if member.size > limits.max_member_bytes:
            problems.append(f"{shown} is {member.size} bytes, more than the limit of {limits.max_member_bytes}")
        total += member.size
        key = unicodedata.normalize("NFC", name)
        if key in seen:
            other = seen[key]
            problems.append(
                f"{shown} appears twice"
                if other == name
                else f"{shown} and {other!r} differ only by Unicode normalization"
            )
        else:
            seen[key] = name
            kinds[key] = member.type
    for key in kinds:
        parent = key.rpartition("/")[0]
        while parent:
            if parent in kinds and kinds[parent] != tarfile.DIRTYPE:
                problems.append(f"{key!r} lies under {parent!r}, which is a file")
                break
            parent = parent.rpartition("/")[0]
    if total > limits.max_total_bytes:
        problems.append(f"members total {total} bytes, more than the limit of {limits.max_total_bytes}")
    if problems:
        raise UnsafeArchiveError(archive, problems)
    tops = {name.split("/", 1)[0] for name in seen.values()}
    if len(tops) != 1 or f"{next(iter(tops))}/bagit.txt" not in seen.values():
        raise NotABundleError(archive, "an exported bundle holds one top directory with bagit.txt in it")
    return next(iter(tops))


def _stream(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[bytes]:
    handle = tar.extractfile(member)
    assert handle is not None  # regular files only, checked above
    remaining = member.size
    while remaining:
        chunk = handle.read(min(CHUNK, remaining))
        if not chunk:
            raise tarfile.ReadError(f"unexpected end of data in {member.name}")
        remaining -= len(chunk)
        yield chunk


def verify_archive(archive: Path, limits: ImportLimits | None = None) -> VerifyReport:
    """Verify an exported bundle by streaming its members against the manifests; nothing is extracted."""
    tar, members = _open_tar(archive)
    with tar:
        top = check_members(archive, members, limits or ImportLimits())
        hashed: dict[str, str] = {}
        sizes: dict[str, int] = {}
        texts: dict[str, str] = {}
        try:
            for member in members:
                if not member.isreg():
                    continue
                rel = member.name[len(top) + 1 :]
                keep = (not rel.startswith(PAYLOAD + "/") or rel in _TEXT_FILES) and member.size <= _TEXT_LIMIT
                digest = hashlib.sha256()
                kept = []
                for chunk in _stream(tar, member):
                    digest.update(chunk)
                    if keep:
                        kept.append(chunk)
                hashed[rel], sizes[rel] = digest.hexdigest(), member.size
                if keep:
                    texts[rel] = b"".join(kept).decode("utf-8", errors="replace")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise _damaged(archive, exc) from None
    info = parse_bag_info(texts.get("bag-info.txt", ""))
    if info.get("Bundle-Format") not in SUPPORTED_FORMATS:
        raise NotABundleError(
            archive,
            f"unknown Bundle-Format {info.get('Bundle-Format')!r}; this bundler reads {', '.join(SUPPORTED_FORMATS)}",
        )
    return check_bag(archive, hashed, sizes, texts.get)


def import_bundle(archive: Path, out: Path, limits: ImportLimits | None = None) -> VerifyReport:
    """Check every header, extract into a temp dir beside `out`, verify, and rename into place."""
    out = out.resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(out)
    tar, members = _open_tar(archive)
    with tar:
        limits = limits or ImportLimits()
        top = check_members(archive, members, limits)
        need = sum(m.size for m in members)
        free = shutil.disk_usage(_existing_parent(out)).free
        if need > free:
            raise InputError(
                f"{archive} needs {need} bytes, {out.parent} has {free} free", "free space or import elsewhere"
            )
        with atomic_dir(out) as work:
            try:
                for member in members:
                    rel = member.name[len(top) + 1 :]
                    if not rel:
                        continue
                    target = work / rel
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(target, "xb") as handle:  # "x": a name can never be written twice
                        for chunk in _stream(tar, member):
                            handle.write(chunk)
            except (tarfile.TarError, EOFError) as exc:
                raise _damaged(archive, exc) from None
            report = _verify_dir(work)
            if not report.ok:
                raise VerifyFailed(archive, report.findings)
    report.bundle = out
    return report


def verify_target(target: Path) -> VerifyReport:
    """Verify a bundle directory, or an exported .tar streamed member by member without extracting it."""
    return verify_archive(target) if target.is_file() else verify_bundle(target)


def _verify_dir(work: Path) -> VerifyReport:
    try:
        return verify_bundle(work)
    except NotABundleError as exc:
        raise NotABundleError(work, exc.reason) from None


def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path
