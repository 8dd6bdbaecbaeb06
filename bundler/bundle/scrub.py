"""Secret scrubbing: find the secrets this process can see, refuse them in recipes, redact them from run records.

Two kinds of evidence (SECRET_PATTERNS below holds the shapes):
- known shapes (hf_..., AKIA..., sk-..., user:password@ in URLs) anywhere;
- the exact values of this process's secret-looking environment variables (HF_TOKEN, AWS_SECRET_ACCESS_KEY,
  WANDB_API_KEY, ...) and the passwords inside credentialed URLs (PIP_EXTRA_INDEX_URL=https://u:p@host/),
  which have no recognisable shape of their own.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bundler.bundle.atomic import atomic_write_bytes
from bundler.errors import SecretError

# Known token shapes. They follow detect-secrets 1.5's plugins (aws.py, github_token.py, gitlab_token.py,
# slack.py, openai.py, private_key.py) where it has one, plus the Hugging Face, W&B and GCP
# service-account shapes it lacks. detect-secrets itself is not run: it reads line by line in Python
# with every plugin on every line, about 0.3 MB/s here (bench/bench_secrets.py), far too slow for a
# large code.tar. Instead all rules (and the exact values of secret environment variables) are joined
# into one RE2 expression: RE2 matches by DFA in one pass whatever the number of rules (google-re2;
# Python's re takes one pass per alternative and measured about 130 MB/s).
_RULES: list[tuple[str, str]] = [
    ("Hugging Face token", r"\bhf_[A-Za-z0-9]{30,}\b"),
    ("AWS access key", r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    ("AWS secret key", r"(?i:secret_access_key)[\"']?\s*[=:]\s*[\"']?[A-Za-z0-9/+]{40}(?:[^A-Za-z0-9/+]|$)"),
    ("GitHub token", r"\bgh[pousr]_[A-Za-z0-9_]{30,}\b"),
    ("GitHub token", r"\bgithub_pat_[A-Za-z0-9_]{40,}\b"),
    ("GitLab token", r"\bgl(?:pat|dt|ft|soat|rt|cbt|imt|ptt|agent|oas)-[A-Za-z0-9_-]{20,}"),
    ("GitLab token", r"GR1348941[A-Za-z0-9_-]{20,}"),
    ("Slack token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    ("Slack webhook", r"hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+"),
    ("OpenAI/W&B-style key", r"\bsk-[A-Za-z0-9_-]{20,}"),
    ("W&B API key", r"api\.wandb\.ai\s+login\s+\S+\s+password\s+[0-9a-f]{40}\b"),
    ("W&B API key", r"WANDB_API_KEY[\"']?\s*[=:]\s*[\"']?[0-9a-f]{40}\b"),
    ("W&B API key", r"wandb\.login\([^)]{0,80}key\s*=\s*[\"'][0-9a-f]{40}\b"),
    ("Google API key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
    ("GCP service-account key", r'"private_key_id"\s*:\s*"[0-9a-f]{40}"'),
    ("private key", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----"),
    ("private key", r"PuTTY-User-Key-File-\d"),
    ("credentials in a URL", r"://[^/\s:@\"'<>]+:[^/\s@\"'<>]+@"),
]
# The longest a match needs to be seen whole; chunks overlap by this much.
_WINDOW = 1024
_CHUNK = 1 << 20


def _by_kind() -> dict[str, re.Pattern[str]]:
    kinds: dict[str, list[str]] = {}
    for kind, regex in _RULES:
        kinds.setdefault(kind, []).append(regex)
    return {kind: re.compile("|".join(f"(?:{r})" for r in regexes)) for kind, regexes in kinds.items()}


# Known token shapes by kind (str patterns); a config value matching one is refused, never stored.
SECRET_PATTERNS: dict[str, re.Pattern[str]] = _by_kind()
_BYTE_RULES = [(kind, re.compile(regex.encode())) for kind, regex in _RULES]
# RE2's DFA loses its literal-prefix speed-up (measured: 1,000+ MB/s down to about 250) on a leading or
# trailing \b, so the joined expression drops them and a hit is confirmed with the full rule in Python.
_FAST = [re.sub(r"^\\b|\\b$", "", regex).encode() for _, regex in _RULES]
_ENV_VALUE_KIND = "the value of a secret environment variable"


def _compile_all(sources: list[bytes]) -> Any:
    """One expression matching any of `sources`: RE2 when installed (one DFA pass), else Python's re."""
    joined = b"|".join(b"(?:" + source + b")" for source in sources)
    try:
        import re2  # google-re2
    except ImportError:  # pragma: no cover - the extra is in pyproject; this keeps scanning correct without it
        return re.compile(joined)
    options = re2.Options()
    options.max_mem = 64 << 20  # the DFA's cache; past it RE2 falls back to its (slower) NFA, still linear
    return re2.compile(joined, options=options)


def find_secret(text: str) -> str | None:
    """Return the kind of secret `text` contains, or None."""
    for kind, pattern in SECRET_PATTERNS.items():
        if pattern.search(text):
            return kind
    return None


@dataclass(frozen=True)
class SecretFinding:
    """A secret found in a file: its kind and where (line from 1, byte offset from 0); never the value."""

    path: str
    kind: str
    line: int
    offset: int

    @property
    def where(self) -> str:
        return f"{self.path} line {self.line} (byte {self.offset})"

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}"


class SecretScanner:
    """Stream bytes through the rules (and exact secret values), chunk by chunk; memory stays at one chunk."""

    def __init__(self, values: Iterable[str] = (), *, env_file: bool = False, shapes: bool = True) -> None:
        exact = [(_ENV_VALUE_KIND, re.compile(re.escape(v.encode()))) for v in sorted(set(values)) if v]
        self.rules = (list(_BYTE_RULES) if shapes else []) + exact
        sources = (_FAST if shapes else []) + [pattern.pattern for _, pattern in exact]
        self.any = _compile_all(sources) if sources else None
        self.env_file = env_file

    def scan(self, stream: BinaryIO, path: str, *, first_only: bool = True) -> list[SecretFinding]:
        """Return the findings in `stream` (only the first when `first_only`)."""
        found: list[SecretFinding] = []
        tail = b""
        base = lines = 0  # offset and newline count of buf[0] in the stream
        while True:
            chunk = stream.read(_CHUNK)
            buf = tail + chunk
            last = not chunk
            # A match starting at p is judged here only when a whole match fits after p, or the stream ended.
            limit = len(buf) if last else len(buf) - _WINDOW
            for kind, offset in self._hits(buf, limit):
                found.append(SecretFinding(path, kind, lines + buf.count(b"\n", 0, offset) + 1, base + offset))
                if first_only:
                    return found
            if self.env_file:
                found += self._env_lines(buf, limit, path, base, lines)
                if first_only and found:
                    return found[:1]
            if last:
                return found
            keep = max(0, limit)
            lines += buf.count(b"\n", 0, keep)
            base += keep
            tail = buf[keep:]

    def _hits(self, buf: bytes, limit: int) -> Iterator[tuple[str, int]]:
        if self.any is None:
            return
        pos = 0
        while pos < limit:
            match = self.any.search(buf, pos)
            if match is None or match.start() >= limit:
                return
            start = match.start()
            kind = self._kind_at(buf, start)
            if kind:
                yield kind, start
            pos = start + 1

    def _kind_at(self, buf: bytes, start: int) -> str | None:
        """The rule that matches at `start` with its word boundaries, or None (e.g. `mask_hf_...`)."""
        for kind, pattern in self.rules:
            if pattern.match(buf, start) and not (pattern.pattern.startswith(rb"\b") and _word_before(buf, start)):
                return kind
        return None

    def _env_lines(self, buf: bytes, limit: int, path: str, base: int, lines: int) -> list[SecretFinding]:
        """In a .env file, NAME=value with a secret-looking NAME is a secret whatever the value looks like."""
        found = []
        for match in _ENV_ASSIGNMENT.finditer(buf, 0, max(0, limit)):
            name, value = match.group("name").decode(), match.group("value").strip(b"\"' ")
            if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LENGTH and not value.startswith(b"${"):
                offset = match.start("value")
                where = lines + buf.count(b"\n", 0, offset) + 1
                found.append(SecretFinding(path, f"a value of {name} in an env file", where, base + offset))
        return found


def _word_before(buf: bytes, start: int) -> bool:
    return start > 0 and (chr(buf[start - 1]).isalnum() or buf[start - 1] == 0x5F) and buf[start - 1] < 128


_ENV_ASSIGNMENT = re.compile(
    rb"(?m)^[ \t]*(?:export[ \t]+)?(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=[ \t]*(?P<value>[^\r\n#]*)"
)


def is_env_file(name: str) -> bool:
    """`.env`, `.env.local`, `deploy.env`, `prod.env.example`: dotenv files by any name."""
    base = name.rsplit("/", 1)[-1].lower()
    return base == ".env" or base.startswith(".env.") or base.endswith(".env") or ".env." in base


def scan_file(path: Path, label: str, values: Iterable[str] = (), *, first_only: bool = True) -> list[SecretFinding]:
    """Scan one file on disk, streamed, whatever its size."""
    with path.open("rb") as stream:
        return SecretScanner(values, env_file=is_env_file(path.name)).scan(stream, label, first_only=first_only)


REDACTED = "[REDACTED]"
# Variable names that hold secrets by convention (AWS_SECRET_ACCESS_KEY, HF_TOKEN, WANDB_API_KEY, PGPASSWORD,
# GOOGLE_APPLICATION_CREDENTIALS is a path, but harmless to treat as secret).
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW(OR)?D|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH", re.I)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/\s:@]+)(:(?P<password>[^/\s@]+))?@", re.I)
# Shorter values are too likely to occur by chance ("true", "1", a region name).
MIN_SECRET_LENGTH = 8
# Run records above this are scanned (streamed) and refused, not redacted in memory.
REDACT_LIMIT = 256 * 1024 * 1024


def secret_values(environ: Mapping[str, str] | None = None) -> set[str]:
    """The secret values visible in an environment (default: this process's)."""
    environ = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in environ.items():
        if len(value) >= MIN_SECRET_LENGTH and (SECRET_NAME.search(name) or _has_shape(value)):
            found.add(value)
        for match in _URL_CREDENTIALS.finditer(value):
            userinfo = match.group(0)[len(match.group("scheme")) : -1]
            password = match.group("password")
            if password:
                found.add(userinfo)
                if len(password) >= MIN_SECRET_LENGTH:
                    found.add(password)
            elif len(match.group("user")) >= MIN_SECRET_LENGTH:  # https://TOKEN@host
                found.add(match.group("user"))
    return found


def _has_shape(text: str) -> bool:
    return any(pattern.search(text) for pattern in SECRET_PATTERNS.values())


def scrub_text(text: str, values: Iterable[str] = ()) -> str:
    """Redact known secret values and known secret shapes; URL credentials keep their scheme and host."""
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    for pattern in SECRET_PATTERNS.values():
        text = pattern.sub(REDACTED, text)
    return text


def find_secret_bytes(data: bytes, values: Iterable[str], as_text: bool = True) -> str | None:
    """Name the first secret in `data` (an exact value, or a known shape), or None; `as_text` is kept for callers."""
    import io

    found = SecretScanner(values).scan(io.BytesIO(data), "")
    return found[0].kind if found else None


def _is_text(path: Path) -> bool:
    """Run records worth redacting as text: sniffed like git does (no NUL in the first 8 KiB)."""
    with path.open("rb") as stream:
        return b"\0" not in stream.read(8192)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


# Archive members that may hold secrets in this context: the dataset's files inside code.tar under
# --allow-secrets-in-data (scanned and named on their own). A context variable rather than a parameter
# because the bundle is sealed (bag.seal_bundle -> refuse_secrets) by code that knows nothing of datasets.
_ALLOWED_MEMBERS: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "bundler_allowed_secret_members", default=frozenset()
)


@contextlib.contextmanager
def secrets_allowed_in(members: Iterable[str]) -> Iterator[None]:
    """Within the block, refuse_secrets does not scan these code.tar members (paths inside the archive)."""
    token = _ALLOWED_MEMBERS.set(frozenset(members))
    try:
        yield
    finally:
        _ALLOWED_MEMBERS.reset(token)


def refuse_secrets(root: Path, values: Iterable[str] | None = None, label: str = "") -> None:
    """Raise SecretError naming the first file under `root` that holds a secret (recipes are never redacted:
    they are the user's input, and a silently changed recipe would not be what they asked to run).

    Every file is scanned, streamed and whatever its size; a tar (code.tar) member by member.
    """
    values = secret_values() if values is None else set(values)
    for path in _files(root):
        where = f"{label or root.name}/{path.relative_to(root).as_posix()}"
        if path.suffix == ".tar":
            found = scan_tar(path, where, values, skip=_ALLOWED_MEMBERS.get())
        else:
            found = scan_file(path, where, values)
        if found:
            committed = path.suffix in (".tar", ".patch")
            raise SecretError(found[0].where, found[0].kind, _COMMITTED_HINT if committed else "")


_COMMITTED_HINT = (
    "remove it from the commit (rewrite history, e.g. with git filter-repo), revoke it where it was issued, "
    "and read it from the environment at the moment of use instead"
)


def scan_tar(
    path: Path, label: str, values: Iterable[str], *, first_only: bool = True, skip: Collection[str] = ()
) -> list[SecretFinding]:
    """Scan each regular member of an uncompressed tar as a stream (no member is read whole), except `skip`."""
    import tarfile

    found: list[SecretFinding] = []
    values = list(values)
    with tarfile.open(path, mode="r|") as tar:
        for member in tar:
            if not member.isreg() or member.name in skip:
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            scanner = SecretScanner(values, env_file=is_env_file(member.name))
            found += scanner.scan(handle, f"{label}:{member.name}", first_only=first_only)  # type: ignore[arg-type]
            if found and first_only:
                return found
    return found


def scrub_tree(root: Path, values: Iterable[str] | None = None) -> list[Path]:
    """Redact secrets in place from the text files under `root` (run records: env.json, logs, metrics, cards);
    return the files changed. Binary files holding an exact secret value are refused."""
    values = secret_values() if values is None else set(values)
    changed = []
    for path in _files(root):
        if not _is_text(path) or path.stat().st_size > REDACT_LIMIT:
            exact = SecretScanner(values, shapes=False)  # binaries: exact values only (shapes occur by chance)
            with path.open("rb") as stream:
                found = exact.scan(stream, f"{root.name}/{path.relative_to(root).as_posix()}")
            if found:
                raise SecretError(found[0].where, found[0].kind)
            continue
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")
        clean = scrub_text(text, values)
        if clean != text:
            atomic_write_bytes(path, clean.encode("utf-8", errors="surrogateescape"))
            changed.append(path)
    return changed
