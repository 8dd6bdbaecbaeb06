"""Export a bundle as one byte-reproducible tar, import one safely, and verify one without extracting it.

Export: members sorted, under one top directory named after the bundle ID (BagIt serialization), mtime 0,
uid/gid 0, no owner names, mode 0644/0755, regular files and directories only, PAX format. Nothing about
the machine, the clock or the bundle's path enters the bytes.

Import trusts nothing: every header is read by bundler.bundle.tarscan (not `tarfile`) and judged before a
byte is written (absolute paths, `..`, links, devices, sparse members, duplicates, names equal after Unicode
normalization, sizes and counts over the limits, data after the end); then the members are copied into a
temp directory beside --out, verified, and renamed into place. `verify X.tar` judges the same members in
place through the same BagIt judge as a directory (bundler.bundle.bagit), so both give one verdict.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bundler.bundle.atomic import atomic_dir, interrupts_as_keyboard
from bundler.bundle.bag import bundle_id_of, remove_stale_partials
from bundler.bundle.finding import Finding
from bundler.bundle.hashing import CHUNK, list_files
from bundler.bundle.tarscan import TarLimits, TarMember, scan_tar
from bundler.bundle.verify import VerifyReport, judge_source, require_verified, verify_bundle
from bundler.errors import InputError, NotABundleError, OutputExistsError, UnsafeArchiveError, VerifyFailed

EXPORT_SCHEMA = "bundler.export/1"
# The limits import and verify apply; kept under this name for callers of the first archive reader.
ImportLimits = TarLimits


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


def check_members(archive: Path, members: list[TarMember], problems: list[str] | None = None) -> str:
    """Refuse an archive `bundler export` could not have made (every problem listed); return its top dir."""
    problems = list(problems or [])
    seen: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for member in members:
        name = member.name
        shown = repr(name[:200])
        parts = name.split("/")
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            problems.append(f"{shown} is an absolute path")
        elif any(part in ("", ".", "..") for part in parts):
            problems.append(f"{shown} has an empty, '.' or '..' component")
        elif "\\" in name or any(ord(c) < 32 for c in name):
            problems.append(f"{shown} holds a backslash or control character")
        elif any(len(part.encode("utf-8")) > 255 for part in parts):
            problems.append(f"{shown} has a path component over 255 bytes")
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
            kinds[key] = member.kind
    for key in kinds:
        parent = key.rpartition("/")[0]
        while parent:
            if kinds.get(parent, "dir") != "dir":
                problems.append(f"{key!r} lies under {parent!r}, which is a file")
                break
            parent = parent.rpartition("/")[0]
    if problems:
        raise UnsafeArchiveError(archive, problems)
    tops = {name.split("/", 1)[0] for name in seen.values()}
    if len(tops) != 1 or f"{next(iter(tops))}/bagit.txt" not in seen.values():
        raise NotABundleError(archive, "an exported bundle holds one top directory with bagit.txt in it")
    return next(iter(tops))


class TarSource:
    """An exported bundle read in place as a BagSource: the files of its one top directory, never extracted."""

    def __init__(self, stream: BinaryIO, where: Path, limits: TarLimits | None = None) -> None:
        self.where = where
        self.stream = stream
        scanned = scan_tar(stream, where, limits or TarLimits())
        members = scanned.members
        top = check_members(where, members, scanned.problems)
        self.files = {m.name[len(top) + 1 :]: m for m in members if m.kind == "file"}
        self.members = members
        self.top = top

    def sizes(self) -> Mapping[str, int]:
        return {rel: m.size for rel, m in self.files.items()}

    def read(self, rel: str) -> bytes:
        member = self.files[rel]
        self.stream.seek(member.offset)
        data = self.stream.read(member.size)
        if len(data) != member.size:
            raise InputError(f"{self.where}: {rel} is cut short", "copy the archive again from its source")
        return data

    def chunks(self, member: TarMember) -> Iterable[bytes]:
        self.stream.seek(member.offset)
        remaining = member.size
        while remaining:
            chunk = self.stream.read(min(CHUNK, remaining))
            if not chunk:
                raise InputError(f"{self.where}: {member.name} is cut short", "copy the archive again from its source")
            remaining -= len(chunk)
            yield chunk

    def digests(self, algorithms: Iterable[str]) -> dict[str, dict[str, str]]:
        algorithms = tuple(algorithms)
        result = {}
        for rel, member in sorted(self.files.items(), key=lambda item: item[1].offset):
            digests = {alg: hashlib.new(alg) for alg in algorithms}
            for chunk in self.chunks(member):
                for digest in digests.values():
                    digest.update(chunk)
            result[rel] = {alg: d.hexdigest() for alg, d in digests.items()}
        return result

    def listing_findings(self) -> list[Finding]:
        return []


def _open(archive: Path) -> BinaryIO:
    if not archive.is_file():
        raise InputError(f"{archive} does not exist or is not a file", "pass the .tar written by `bundler export`")
    try:
        return open(archive, "rb")
    except OSError as exc:
        raise InputError(f"{archive} cannot be read ({exc.strerror})", "check its permissions") from None


def verify_stream(stream: BinaryIO, where: Path, limits: TarLimits | None = None, **checks: object) -> VerifyReport:
    """Verify an exported bundle from a seekable binary stream (a file, an OCI layer spooled to one)."""
    return judge_source(TarSource(stream, where, limits), **checks)  # type: ignore[arg-type]


def verify_archive(archive: Path, limits: TarLimits | None = None, **checks: object) -> VerifyReport:
    """Verify an exported bundle's members in place; nothing is extracted."""
    with _open(archive) as stream:
        return verify_stream(stream, archive, limits, **checks)


def import_bundle(archive: Path, out: Path, limits: TarLimits | None = None) -> VerifyReport:
    """Check every header, copy the files into a temp dir beside `out`, verify, and rename into place."""
    out = out.resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(out)
    remove_stale_partials(out)  # what a killed import left (SIGKILL cannot clean up after itself)
    with _open(archive) as stream:
        source = TarSource(stream, archive, limits)
        need = sum(m.size for m in source.members)
        free = shutil.disk_usage(_existing_parent(out)).free
        if need > free:
            raise InputError(
                f"{archive} needs {need} bytes, {out.parent} has {free} free", "free space or import elsewhere"
            )
        with interrupts_as_keyboard(), atomic_dir(out) as work:
            for member in source.members:
                rel = member.name[len(source.top) + 1 :]
                if not rel:
                    continue
                target = work / rel
                if member.kind == "dir":
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "xb") as handle:  # "x": a name can never be written twice
                    for chunk in source.chunks(member):
                        handle.write(chunk)
            report = _verify_dir(work)
            if not report.ok:
                raise VerifyFailed(archive, report.findings)
    report.bundle = out
    return report


def verify_target(target: Path, **checks: object) -> VerifyReport:
    """Verify a bundle directory, or an exported .tar read in place; the same judge for both."""
    return verify_archive(target, **checks) if target.is_file() else verify_bundle(target, **checks)  # type: ignore[arg-type]


def _verify_dir(work: Path) -> VerifyReport:
    try:
        return verify_bundle(work)
    except NotABundleError as exc:
        raise NotABundleError(work, exc.reason) from None


def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path
