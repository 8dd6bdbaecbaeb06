"""Judge a bag by BagIt 1.0 (RFC 8493) alone: declaration, bag-info, every manifest of every algorithm, fetch.txt.

One judge for a directory and a tar: both are a BagSource (sizes of the regular files, a reader of small tag
files, digests of every file), so the two give the same verdict by construction. What bundler adds on top
(identity, runs, statements, signatures) is bundler.bundle.verify's.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bundler.bundle.finding import Finding
from bundler.bundle.hashing import ALGORITHMS, decode_path
from bundler.errors import InputError, NotABundleError

BAGIT_VERSION = "1.0"
# Tag files (manifests included) are read whole; a genuine one of a bundle of 200,000 files is ~30 MB.
TAG_FILE_LIMIT = 64 * 1024 * 1024
_DIGEST_LENGTH = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}
_MANIFEST_NAME = re.compile(r"^(tag)?manifest-([A-Za-z0-9]+)\.txt$")
_MANIFEST_LINE = re.compile(r"^([0-9A-Fa-f]+)[ \t]+(\S.*)$")
_DECLARATION = (
    re.compile(r"^BagIt-Version: ([0-9]+\.[0-9]+)$"),
    re.compile(r"^Tag-File-Character-Encoding: (\S+)$"),
)


class BagSource(Protocol):
    """A bag to judge: a directory or an archive, read the same way."""

    where: Path

    def sizes(self) -> Mapping[str, int]:
        """{bag-relative path: size} of every regular file."""

    def read(self, rel: str) -> bytes:
        """The bytes of a small file (callers check its size against TAG_FILE_LIMIT first)."""

    def digests(self, algorithms: Iterable[str]) -> dict[str, dict[str, str]]:
        """{bag-relative path: {algorithm: hex digest}} of every regular file."""

    def listing_findings(self) -> list[Finding]:
        """What listing the files found that a bag may not hold (links, devices)."""


@dataclass
class BagJudgement:
    """The BagIt verdict plus what the bundle layer reads next, all from one pass over the bytes."""

    findings: list[Finding] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)
    payload_manifest: dict[str, str] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)

    def text(self, rel: str) -> str | None:
        """A small file as UTF-8 text (tag files and the recipe records verify reads), or None."""
        return self.texts.get(rel)


def is_tag_manifest(rel: str) -> bool:
    match = _MANIFEST_NAME.match(rel)
    return bool(match and match.group(1))


def decode_text(rel: str, data: bytes) -> tuple[str | None, Finding | None]:
    """UTF-8 text, or a finding saying the file is not UTF-8 (with where it breaks)."""
    if data.startswith(b"\xef\xbb\xbf"):
        return None, Finding("tag-encoding", rel, "starts with a byte-order mark (BOM), which RFC 8493 forbids")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, Finding(
            "tag-encoding",
            rel,
            f"is not UTF-8 (byte {exc.start} is 0x{data[exc.start]:02x}); bundler tag files are UTF-8",
        )


def judge_bag(source: BagSource, *, unlisted_tag_ok: Callable[[str], bool] = lambda rel: False) -> BagJudgement:
    """Check a bag by RFC 8493; raise NotABundleError only when it has no bagit.txt at all."""
    sizes = dict(source.sizes())
    judged = BagJudgement(sizes=sizes)
    found = judged.findings
    found += source.listing_findings()
    if "bagit.txt" not in sizes:
        raise NotABundleError(source.where, "bagit.txt is missing")
    small = [rel for rel in sizes if "/" not in rel and rel.endswith(".txt")]
    for rel in sorted(small):
        if sizes[rel] > TAG_FILE_LIMIT:
            found.append(Finding("tag-encoding", rel, f"is {sizes[rel]} bytes, over the {TAG_FILE_LIMIT}-byte limit"))
            continue
        text, problem = decode_text(rel, source.read(rel))
        if problem:
            found.append(problem)
        elif text is not None:
            judged.texts[rel] = text
    found += _declaration_findings(judged.texts.get("bagit.txt"), "bagit.txt" in judged.texts)
    if "fetch.txt" in sizes:
        found.append(
            Finding(
                "fetch",
                "fetch.txt",
                "the bag is incomplete: it lists files to download; bundler verifies complete bags only",
            )
        )
    judged.info, info_findings = parse_bag_info_strict(judged.texts.get("bag-info.txt"))
    found += info_findings

    manifests: dict[str, dict[str, str]] = {}
    for rel in sorted(sizes):
        match = _MANIFEST_NAME.match(rel)
        if not match:
            continue
        alg = match.group(2)
        if alg not in ALGORITHMS:
            found.append(Finding("unsupported-algorithm", rel, f"algorithm {alg!r} is none of {', '.join(ALGORITHMS)}"))
            continue
        text = judged.texts.get(rel)
        if text is not None:
            lines, problems = parse_manifest_lines(rel, text, alg, tag=bool(match.group(1)))
            manifests[rel] = lines
            found += problems
    payload_manifests = {n: m for n, m in manifests.items() if not is_tag_manifest(n)}
    if not payload_manifests:
        found.append(Finding("missing-file", "manifest-sha256.txt", "the bag has no payload manifest"))

    algorithms = {"sha256"} | {_MANIFEST_NAME.match(n).group(2) for n in manifests}  # type: ignore[union-attr]
    digests = source.digests(sorted(algorithms))
    judged.sha256 = {rel: d["sha256"] for rel, d in digests.items()}
    payload = {rel for rel in sizes if rel.startswith("data/")}
    tags = set(sizes) - payload
    for name, lines in sorted(manifests.items()):
        alg = _MANIFEST_NAME.match(name).group(2)  # type: ignore[union-attr]
        actual = {rel: digests[rel][alg] for rel in (tags if is_tag_manifest(name) else payload) if rel in digests}
        if is_tag_manifest(name):
            actual = {rel: d for rel, d in actual.items() if not is_tag_manifest(rel) and not unlisted_tag_ok(rel)}
            actual.update({rel: digests[rel][alg] for rel in lines if rel in digests})  # listed ones always count
        found += compare(name, alg, lines, actual)
    judged.payload_manifest = manifests.get("manifest-sha256.txt", {})
    oxum = judged.info.get("Payload-Oxum")
    want = f"{sum(sizes[p] for p in payload)}.{len(payload)}"
    if oxum is not None and oxum != want:
        found.append(
            Finding("payload-oxum", "bag-info.txt", f"Payload-Oxum is {oxum}, the payload has {want} (octets.files)")
        )
    return judged


def _declaration_findings(text: str | None, readable: bool) -> list[Finding]:
    if not readable:
        return []  # decode_text already said why
    lines = (text or "").replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n")
    if len(lines) != 2 or not all(p.match(line) for p, line in zip(_DECLARATION, lines, strict=False)):
        shown = " / ".join(repr(line) for line in lines[:3])
        return [
            Finding(
                "bagit-declaration",
                "bagit.txt",
                f"must be exactly 'BagIt-Version: M.N' and 'Tag-File-Character-Encoding: ENCODING' (found {shown})",
            )
        ]
    version = _DECLARATION[0].match(lines[0]).group(1)  # type: ignore[union-attr]
    encoding = _DECLARATION[1].match(lines[1]).group(1)  # type: ignore[union-attr]
    findings = []
    if version != BAGIT_VERSION:
        findings.append(
            Finding("bagit-declaration", "bagit.txt", f"BagIt-Version is {version}; bundler bags are {BAGIT_VERSION}")
        )
    if encoding.upper().replace("_", "-") not in ("UTF-8", "UTF8"):
        findings.append(
            Finding("bagit-declaration", "bagit.txt", f"Tag-File-Character-Encoding is {encoding}, not UTF-8")
        )
    return findings


def parse_bag_info_strict(text: str | None) -> tuple[dict[str, str], list[Finding]]:
    """bag-info.txt labels (the last value of a repeated label) and every line that is not 'Label: value'."""
    info: dict[str, str] = {}
    findings: list[Finding] = []
    last = None
    for number, line in enumerate((text or "").splitlines(), start=1):
        if line[:1] in (" ", "\t") and last is not None:
            info[last] += " " + line.strip()  # a continuation line (RFC 8493 2.2.2)
            continue
        label, sep, value = line.partition(":")
        if not sep or not label.strip() or label != label.strip():
            findings.append(Finding("bag-info", "bag-info.txt", f"line {number} is not 'Label: value': {line[:80]!r}"))
            continue
        last = label
        info[label] = value.strip()
    return info, findings


def parse_manifest_lines(name: str, text: str, alg: str, *, tag: bool) -> tuple[dict[str, str], list[Finding]]:
    """{decoded path: digest} of a manifest, and a finding for every malformed, out-of-scope or repeated line."""
    lines: dict[str, str] = {}
    normalized: dict[str, str] = {}
    findings: list[Finding] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _MANIFEST_LINE.match(line)
        if not match or len(match.group(1)) != _DIGEST_LENGTH[alg]:
            findings.append(
                Finding("manifest-syntax", name, f"line {number} is not '<{alg} digest>  <path>': {line[:80]!r}")
            )
            continue
        digest, path = match.group(1).lower(), decode_path(match.group(2))
        scope = _scope_problem(path, tag)
        if scope:
            findings.append(Finding("out-of-scope-path", name, f"line {number}: {path[:80]!r} {scope}"))
            continue
        key = unicodedata.normalize("NFC", path)
        if key in normalized:
            first = normalized[key]
            same = "with the same digest" if lines[first] == digest else "with a conflicting digest"
            twin = "" if first == path else f" (equal to {first!r} after Unicode normalization)"
            findings.append(Finding("manifest-duplicate", name, f"line {number} lists {path!r} again {same}{twin}"))
            continue
        normalized[key] = path
        lines[path] = digest
    return lines, findings


def _scope_problem(path: str, tag: bool) -> str | None:
    parts = path.split("/")
    if path.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", path) or "\\" in path:
        return "is an absolute or home-relative path"
    if any(part in ("", ".", "..") for part in parts):
        return "has an empty, '.' or '..' component"
    if not tag and parts[0] != "data":
        return "is outside data/ (a payload manifest lists payload files only)"
    if tag and (parts[0] == "data" or is_tag_manifest(path)):
        return "is not a tag file (a tag manifest lists neither payload files nor tag manifests)"
    return None


def compare(name: str, alg: str, listed: Mapping[str, str], actual: Mapping[str, str]) -> list[Finding]:
    """Every file a manifest lists that is missing or changed, and every file it should list but does not."""
    findings = []
    missing = sorted(set(listed) - set(actual))
    extra = sorted(set(actual) - set(listed))
    renamed: set[str] = set()
    for old in missing:
        for new in extra:
            if new not in renamed and actual[new] == listed[old]:
                findings.append(Finding("renamed-file", new, f"{name} lists these bytes as {old}"))
                renamed.update({old, new})
                break
    findings += [Finding("missing-file", p, f"listed in {name}, not in the bag") for p in missing if p not in renamed]
    findings += [Finding("not-listed", p, f"in the bag, not listed in {name}") for p in extra if p not in renamed]
    findings += [
        Finding("changed-file", p, f"{name} says {alg} {listed[p][:12]}, the file has {actual[p][:12]}")
        for p in sorted(set(listed) & set(actual))
        if listed[p] != actual[p]
    ]
    return findings


class DirectorySource:
    """A bag directory as a BagSource; symlinks and special files are listed as findings, never followed."""

    def __init__(self, root: Path) -> None:
        self.where = root
        self._sizes: dict[str, int] = {}
        self._odd: list[Finding] = []
        import os
        import stat

        for directory, subdirs, files in os.walk(root):
            base = Path(directory)
            for name in sorted(subdirs):
                if (base / name).is_symlink():
                    self._odd.append(
                        Finding("not-regular", (base / name).relative_to(root).as_posix(), "is a symbolic link")
                    )
            for name in files:
                path = base / name
                rel = path.relative_to(root).as_posix()
                mode = path.lstat().st_mode
                if stat.S_ISREG(mode):
                    self._sizes[rel] = path.stat().st_size
                else:
                    kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
                    self._odd.append(Finding("not-regular", rel, f"is {kind}"))

    def sizes(self) -> Mapping[str, int]:
        return self._sizes

    def read(self, rel: str) -> bytes:
        try:
            return (self.where / rel).read_bytes()
        except OSError as exc:
            raise _unreadable(self.where, exc) from None

    def digests(self, algorithms: Iterable[str]) -> dict[str, dict[str, str]]:
        from bundler.bundle.hashing import digest_files

        try:
            hashed = digest_files([self.where / rel for rel in self._sizes], algorithms)
        except OSError as exc:
            raise _unreadable(self.where, exc) from None
        return {p.relative_to(self.where).as_posix(): d for p, d in hashed.items()}

    def listing_findings(self) -> list[Finding]:
        return list(self._odd)


def _unreadable(root: Path, exc: OSError) -> InputError:
    return InputError(
        f"{exc.filename or root} cannot be read ({exc.strerror or exc}); the bundle cannot be verified",
        "check the file's permissions, and that nothing changes the bundle while it is verified",
    )


def bag_info_pairs(text: str | None) -> list[tuple[str, str]]:
    """bag-info.txt as (label, value) pairs in file order, repeats kept, continuation lines joined."""
    pairs: list[tuple[str, str]] = []
    for line in (text or "").splitlines():
        if line[:1] in (" ", "\t") and pairs:
            pairs[-1] = (pairs[-1][0], pairs[-1][1] + " " + line.strip())
            continue
        label, sep, value = line.partition(":")
        if sep:
            pairs.append((label.strip(), value.strip()))
    return pairs
