"""Read the headers of an untrusted tar with every bound checked before any allocation; never via `tarfile`.

CPython's tarfile (3.11.7 here) carries the 2024-25 CVEs: negative sizes that loop forever, PAX headers
whose parsing is quadratic, sparse members that expand to gigabytes. This parser accepts only what
`bundler export` writes (POSIX ustar headers, PAX extended headers with a few keys, regular files and
directories) and refuses everything else by name. It reads a seekable binary stream (a file, or an OCI
layer spooled to one), so every archive path goes through the same checks.

Cost is bounded by the archive's size: each header is one 512-byte block, data is skipped by seeking,
a member's data must lie inside the stream before it is accepted, and a PAX header is at most
`TarLimits.max_pax_bytes`. No loop runs more than once per block of input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bundler.errors import InputError, UnsafeArchiveError

BLOCK = 512
# Python's tarfile pads an archive to a multiple of 20 blocks; GNU tar does the same by default.
RECORD = 20 * BLOCK
_COMPRESSED = {
    b"\x1f\x8b": "a gzip stream",
    b"BZh": "a bzip2 stream",
    b"\xfd7zXZ\x00": "an xz stream",
    b"\x28\xb5\x2f\xfd": "a zstd stream",
}
# What `bundler export` (tarfile.PAX_FORMAT) may write in a PAX header; linkpath and GNU.sparse.* are refused.
_PAX_KEYS = frozenset({"path", "size", "mtime", "atime", "ctime", "uid", "gid", "uname", "gname", "hdrcharset"})
_OCTAL = re.compile(rb"^[0-7]{1,12}$")
_DECIMAL = re.compile(r"^[0-9]{1,20}$")
_TYPES = {b"0": "file", b"\x00": "file", b"5": "dir"}
_REFUSED_TYPES = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"6": "a FIFO",
    b"7": "a contiguous file",
    b"g": "a PAX global header",
    b"L": "a GNU long name",
    b"K": "a GNU long link name",
    b"S": "a GNU sparse member",
    b"D": "a GNU directory dump",
    b"M": "a GNU multi-volume member",
    b"V": "a GNU volume header",
}


@dataclass(frozen=True)
class TarLimits:
    """What an archive may hold; over any of them it is refused before a byte is written."""

    max_members: int = 200_000
    max_member_bytes: int = 512 * 1024**3
    max_total_bytes: int = 2 * 1024**4
    max_name_bytes: int = 4096
    # A bundle is ~6 levels deep; bounding depth keeps the parent checks of import linear in the archive's size.
    max_depth: int = 64
    max_pax_bytes: int = 64 * 1024


@dataclass(frozen=True)
class TarMember:
    """One accepted header: a regular file or a directory, where its data starts, and how long it is."""

    name: str
    kind: str
    offset: int
    size: int


@dataclass(frozen=True)
class TarScan:
    """The accepted members, and every rule a well-formed header broke (the caller refuses them all at once)."""

    members: list[TarMember]
    problems: list[str]


def scan_tar(stream: BinaryIO, where: Path, limits: TarLimits) -> TarScan:
    """Every header of a tar, checked; damage or a broken bound raises at once (exit 2), naming the rule."""
    stream.seek(0, 2)
    length = stream.tell()
    stream.seek(0)
    head = stream.read(8)
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            raise InputError(
                f"{where} is {kind}, not a tar",
                "bundler reads the plain .tar that `bundler export` writes; decompress it first",
            )
    members: list[TarMember] = []
    problems: list[str] = []
    pax: dict[str, str] = {}
    total = headers = 0
    position = 0
    while True:
        block = _read_at(stream, position, BLOCK)
        if len(block) < BLOCK:
            raise _damaged(where, f"the archive ends inside a header at byte {position} (no end-of-archive blocks)")
        if block == bytes(BLOCK):
            _check_end(stream, where, position, length)
            if pax:
                raise _damaged(where, "a PAX header is followed by the end of the archive, not by a member")
            return TarScan(members, problems)
        headers += 1
        if headers > 2 * limits.max_members:  # a PAX header counts, so a member may take two headers
            raise UnsafeArchiveError(where, [f"more than {limits.max_members} members"])
        _check_checksum(block, where, position)
        if block[257:263] != b"ustar\x00":
            raise UnsafeArchiveError(
                where, [f"the header at byte {position} is not POSIX ustar/pax (magic {block[257:265]!r})"]
            )
        size = _octal(block[124:136], "size", where, position)
        flag = block[156:157]
        data = position + BLOCK
        if flag == b"x":
            if size > limits.max_pax_bytes:
                raise UnsafeArchiveError(
                    where, [f"a PAX header of {size} bytes, over the limit of {limits.max_pax_bytes}"]
                )
            if data + size > length:
                raise _damaged(where, f"a PAX header at byte {position} runs past the end of the archive")
            if pax:
                raise UnsafeArchiveError(where, [f"two PAX headers in a row at byte {position}"])
            pax = _parse_pax(_read_at(stream, data, size), where, position)
            position = data + _padded(size)
            continue
        if "size" in pax:
            size = int(pax["size"])
        name = pax.get("path") or _ustar_name(block, where, position)
        pax = {}
        shown = repr(name[:200])
        if data + size > length:
            raise _damaged(where, f"{shown} claims {size} bytes, past the end of the archive: truncated")
        position = data + _padded(size)
        # Rules a well-formed header can break: collected, so the refusal lists every one of them at once.
        if flag in _REFUSED_TYPES or flag not in _TYPES:
            kind = _REFUSED_TYPES.get(flag, f"of type {flag!r}")
            problems.append(f"{shown} is {kind}; a bundle holds only regular files and directories")
            continue
        if len(name.encode("utf-8")) > limits.max_name_bytes:
            problems.append(f"a name of {len(name.encode())} bytes, over the limit of {limits.max_name_bytes}")
            continue
        if name.count("/") > limits.max_depth:
            problems.append(
                f"{shown[:80]}... is {name.count('/')} directories deep, over the limit of {limits.max_depth}"
            )
            continue
        if size > limits.max_member_bytes:
            problems.append(f"{shown} is {size} bytes, more than the limit of {limits.max_member_bytes}")
        if _TYPES[flag] == "dir" and size:
            problems.append(f"{shown} is a directory with {size} bytes of data")
        total += size
        if total > limits.max_total_bytes:
            raise UnsafeArchiveError(
                where, [*problems, f"members total more than the limit of {limits.max_total_bytes} bytes"]
            )
        members.append(TarMember(name.rstrip("/") if _TYPES[flag] == "dir" else name, _TYPES[flag], data, size))
        if len(members) > limits.max_members:
            raise UnsafeArchiveError(
                where, [*problems, f"{len(members)} members, more than the limit of {limits.max_members}"]
            )


def _read_at(stream: BinaryIO, offset: int, size: int) -> bytes:
    stream.seek(offset)
    return stream.read(size)


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _check_end(stream: BinaryIO, where: Path, position: int, length: int) -> None:
    """Two zero blocks end the archive; after them only zero padding to the record size may follow."""
    second = _read_at(stream, position + BLOCK, BLOCK)
    if second != bytes(BLOCK):
        if len(second) < BLOCK:
            raise _damaged(where, "the archive ends after one end-of-archive block instead of two")
        raise UnsafeArchiveError(where, [f"a zero block at byte {position} is followed by more headers"])
    tail = length - position - 2 * BLOCK
    if tail > RECORD:
        raise UnsafeArchiveError(
            where, [f"{tail} bytes follow the end-of-archive blocks (data after the end of the archive)"]
        )
    if _read_at(stream, position + 2 * BLOCK, tail).strip(b"\x00"):
        raise UnsafeArchiveError(
            where, ["data after the end of the archive: non-zero bytes follow the end-of-archive blocks"]
        )


def _check_checksum(block: bytes, where: Path, position: int) -> None:
    field = block[148:156].rstrip(b" \x00")
    if not _OCTAL.match(field):
        raise _damaged(where, f"the header at byte {position} has no valid checksum field")
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = unsigned - sum(256 for b in block[:148] + block[156:] if b > 127)
    if int(field, 8) not in (unsigned, signed):
        raise _damaged(where, f"the header at byte {position} fails its checksum")


def _octal(field: bytes, what: str, where: Path, position: int) -> int:
    """A numeric header field; base-256 (GNU, and how negative sizes are spelled) is refused."""
    if field[:1] and field[0] & 0x80:
        raise UnsafeArchiveError(where, [f"the header at byte {position} writes its {what} in base-256 (GNU); refused"])
    digits = field.strip(b" \x00")
    if not digits:
        return 0
    if not _OCTAL.match(digits):
        raise _damaged(where, f"the header at byte {position} has a {what} that is not octal: {field!r}")
    return int(digits, 8)


def _ustar_name(block: bytes, where: Path, position: int) -> str:
    raw = block[0:100].split(b"\x00", 1)[0]
    prefix = block[345:500].split(b"\x00", 1)[0]
    if prefix:
        raw = prefix + b"/" + raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeArchiveError(where, [f"the name at byte {position} is not UTF-8: {raw[:80]!r}"]) from None


def _parse_pax(data: bytes, where: Path, position: int) -> dict[str, str]:
    """PAX records ("<length> <key>=<value>\\n"), each length checked against what is left before it is used."""
    records: dict[str, str] = {}
    at = 0
    while at < len(data):
        space = data.find(b" ", at, at + 8)
        if space < 0 or not data[at:space].isdigit():
            raise UnsafeArchiveError(where, [f"a malformed PAX record in the header at byte {position}"])
        length = int(data[at:space])
        end = at + length
        if length < 5 or end > len(data) or data[end - 1 : end] != b"\n":
            raise UnsafeArchiveError(where, [f"a PAX record with a bad length ({length}) at byte {position}"])
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise UnsafeArchiveError(where, [f"a PAX record without '=' at byte {position}"])
        try:
            name, text = key.decode("utf-8"), value.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafeArchiveError(where, [f"a PAX record that is not UTF-8 at byte {position}"]) from None
        if name.startswith("GNU.sparse"):
            raise UnsafeArchiveError(where, [f"a sparse member (PAX {name}) at byte {position}; refused"])
        if name not in _PAX_KEYS:
            raise UnsafeArchiveError(
                where, [f"a PAX record {name[:40]!r} at byte {position}, which bundler never writes"]
            )
        if name == "size" and not _DECIMAL.match(text):
            raise UnsafeArchiveError(
                where, [f"a PAX size {text[:40]!r} at byte {position} that is not a decimal count"]
            )
        records[name] = text
        at = end
    return records


def _damaged(where: Path, detail: str) -> InputError:
    return InputError(
        f"{where} is not a readable tar: {detail}; it may be truncated or damaged",
        "copy the archive again from its source and check its sha256 (printed by `bundler export`)",
    )
