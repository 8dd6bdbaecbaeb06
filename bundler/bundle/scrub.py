"""Secret scrubbing: find the secrets this process can see, refuse them in recipes, redact them from run records.

Two kinds of evidence (SECRET_PATTERNS below holds the shapes):
- known shapes (hf_..., AKIA..., sk-..., user:password@ in URLs) anywhere;
- the exact values of this process's secret-looking environment variables (HF_TOKEN, AWS_SECRET_ACCESS_KEY,
  WANDB_API_KEY, ...) and the passwords inside credentialed URLs (PIP_EXTRA_INDEX_URL=https://u:p@host/),
  which have no recognisable shape of their own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from bundler.bundle.atomic import atomic_write_bytes
from bundler.errors import SecretError

# Known token shapes; a config value matching one is refused, never stored.
SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
    "AWS access key": re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"),
    "GitHub token": re.compile(r"\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b|\bgithub_pat_[A-Za-z0-9_]{40,}\b"),
    "OpenAI/W&B-style key": re.compile(r"\bsk-[A-Za-z0-9_-]{20,}\b"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "Slack token": re.compile(r"\bxox[abpr]-[A-Za-z0-9-]{10,}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "credentials in a URL": re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"),
}


def find_secret(text: str) -> str | None:
    """Return the kind of secret `text` contains, or None."""
    for kind, pattern in SECRET_PATTERNS.items():
        if pattern.search(text):
            return kind
    return None


REDACTED = "[REDACTED]"
# Variable names that hold secrets by convention (AWS_SECRET_ACCESS_KEY, HF_TOKEN, WANDB_API_KEY, PGPASSWORD,
# GOOGLE_APPLICATION_CREDENTIALS is a path, but harmless to treat as secret).
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW(OR)?D|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH", re.I)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/\s:@]+)(:(?P<password>[^/\s@]+))?@", re.I)
# Shorter values are too likely to occur by chance ("true", "1", a region name).
MIN_SECRET_LENGTH = 8
# Text files worth scanning as text; other files are scanned for exact values only.
TEXT_SUFFIXES = {
    ".json",
    ".jsonl",
    ".toml",
    ".md",
    ".txt",
    ".log",
    ".in",
    ".lock",
    ".patch",
    ".py",
    ".cfg",
    ".yaml",
    ".yml",
    ".csv",
    ".html",
    ".sh",
    ".ini",
    "",
}
SCAN_LIMIT = 256 * 1024 * 1024


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


def find_secret_bytes(data: bytes, values: Iterable[str], as_text: bool) -> str | None:
    """Name the first secret in `data` (an exact value, or a known shape when `as_text`), or None."""
    for value in values:
        if value.encode() in data:
            return "the value of a secret environment variable"
    if as_text:
        text = data.decode("utf-8", errors="replace")
        for kind, pattern in SECRET_PATTERNS.items():
            if pattern.search(text):
                return kind
    return None


def _is_text(path: Path) -> bool:
    return path.suffix.lower() in TEXT_SUFFIXES or path.name == "Dockerfile"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def refuse_secrets(root: Path, values: Iterable[str] | None = None, label: str = "") -> None:
    """Raise SecretError naming the first file under `root` that holds a secret (recipes are never redacted:
    they are the user's input, and a silently changed recipe would not be what they asked to run)."""
    values = secret_values() if values is None else set(values)
    for path in _files(root):
        if path.stat().st_size > SCAN_LIMIT:
            continue
        data = path.read_bytes()
        if path.suffix == ".tar":
            kind = _find_in_tar(data, values)
        else:
            kind = find_secret_bytes(data, values, as_text=_is_text(path))
        if kind:
            raise SecretError(f"{label or root.name}/{path.relative_to(root).as_posix()}", kind)


def _find_in_tar(data: bytes, values: Iterable[str]) -> str | None:
    """Scan each member of an (uncompressed) tar, as text when its name says it is text."""
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            if member.isreg():
                handle = tar.extractfile(member)
                kind = find_secret_bytes(handle.read() if handle else b"", values, _is_text(Path(member.name)))
                if kind:
                    return f"{kind}, in {member.name}"
    return None


def scrub_tree(root: Path, values: Iterable[str] | None = None) -> list[Path]:
    """Redact secrets in place from the text files under `root` (run records: env.json, logs, metrics, cards);
    return the files changed. Binary files holding an exact secret value are refused."""
    values = secret_values() if values is None else set(values)
    changed = []
    for path in _files(root):
        if path.stat().st_size > SCAN_LIMIT:
            continue
        data = path.read_bytes()
        if not _is_text(path):
            kind = find_secret_bytes(data, values, as_text=False)
            if kind:
                raise SecretError(f"{root.name}/{path.relative_to(root).as_posix()}", kind)
            continue
        text = data.decode("utf-8", errors="surrogateescape")
        clean = scrub_text(text, values)
        if clean != text:
            atomic_write_bytes(path, clean.encode("utf-8", errors="surrogateescape"))
            changed.append(path)
    return changed
