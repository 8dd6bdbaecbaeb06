"""requirements.in -> requirements.lock (pip-tools, or uv) for the TARGET; freshness check.

How each resolver targets the image rather than the machine running `bundler lock`:
- pip-tools resolves with the pip that runs it, so it can only lock for this interpreter's
  Python and platform; a different target is refused (use resolver = "uv").
- uv resolves for any target: `--python-version X.Y --python-platform x86_64-manylinux_2_28`.
"""

from __future__ import annotations

import configparser
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bundler.bundle.atomic import atomic_write_text
from bundler.bundle.hashing import canonical_json, sha256_bytes
from bundler.bundle.lockfile import (
    LockedRequirement,
    canonical_name,
    lock_header_input_sha,
    lock_sha256,
    parse_lock_text,
)
from bundler.bundle.scrub import find_secret
from bundler.errors import (
    EnvironmentSetupError,
    InputError,
    SecretError,
    StaleLockError,
    UnresolvableRequirementsError,
)
from bundler.recipe.config import EnvironmentConfig

LOCK_FORMAT = "bundler-lock/1"
RUNTIME_REQUIREMENTS = ("torch", "transformers", "peft", "safetensors", "numpy")
RUNTIME_MARKER = "# Added by bundler: the runtime imports these (bundler/runtime/requirements.txt)."
# uv needs a glibc floor for "linux"; 2.28 is what torch's x86_64 wheels are tagged with and every
# catalog image (Debian 12: glibc 2.36, Ubuntu 22.04: 2.35) is newer.
_UV_PLATFORMS = {"linux/x86_64": "x86_64-manylinux_2_28", "linux/amd64": "x86_64-manylinux_2_28"}
_UNRESOLVABLE = re.compile(
    r"No matching distribution|Could not find a version|ResolutionImpossible|No solution found|"
    r"not found in the package registry|was not found in the provided package locations|"
    r"Invalid requirement|Expected package name|no versions of",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PackageSources:
    """Where the resolver looks: index URLs and find-links, as pip is configured here."""

    index_url: str = "https://pypi.org/simple"
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()

    def redacted(self) -> PackageSources:
        return PackageSources(
            strip_credentials(self.index_url),
            tuple(strip_credentials(u) for u in self.extra_index_urls),
            tuple(strip_credentials(u) for u in self.find_links),
        )

    def local_only(self) -> PackageSources:
        """Keep only sources on this machine (file:// indexes, find-links folders)."""
        local = [u for u in (self.index_url, *self.extra_index_urls) if _is_local(u)]
        return PackageSources(
            local[0] if local else "",
            tuple(local[1:]),
            tuple(u for u in self.find_links if _is_local(u)),
        )


@dataclass(frozen=True)
class LockStatus:
    """A lock that matches its requirements.in."""

    lock: Path
    input_sha256: str
    lock_sha256: str


@dataclass(frozen=True)
class LockResult:
    """What `write_lock` did."""

    lock: Path
    input_sha256: str
    lock_sha256: str
    resolver: str
    resolver_version: str
    cached: bool
    seconds: float
    added_runtime: tuple[str, ...] = ()
    variants: dict[str, str] = field(default_factory=dict)


def strip_credentials(url: str) -> str:
    """Remove user:password@ from a URL (pip-style credentials); other text is kept."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


def _is_local(url: str) -> bool:
    return url.startswith("file://") or (bool(url) and "://" not in url)


def runtime_requirements() -> list[str]:
    """The runtime's own requirements: bundler/runtime/requirements.txt when present."""
    path = Path(__file__).resolve().parent.parent / "runtime" / "requirements.txt"
    if path.is_file():
        lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return [line for line in lines if line]
    return list(RUNTIME_REQUIREMENTS)


def _requirement_name(line: str) -> str | None:
    match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    if line.lstrip().startswith("-") or not match:
        return None
    return canonical_name(match.group(1))


def effective_input(requirements: Path) -> tuple[str, tuple[str, ...]]:
    """Return requirements.in text plus the runtime's requirements it left out, and those added.

    Refuses (SecretError) a line carrying credentials; the text is never written anywhere then.
    """
    if not requirements.is_file():
        raise InputError(
            f"no requirements file at {requirements}",
            "write requirements.in (one requirement per line), then run `bundler lock`",
        )
    text = requirements.read_text(encoding="utf-8").replace("\r\n", "\n")
    present = set()
    for number, line in enumerate(text.splitlines(), start=1):
        kind = find_secret(line)
        if kind:
            raise SecretError(f"{requirements} line {number}", kind)
        name = _requirement_name(line.split("#", 1)[0])
        if name:
            present.add(name)
    added = tuple(r for r in runtime_requirements() if _requirement_name(r) not in present)
    if not text.endswith("\n") and text:
        text += "\n"
    if added:
        text += "\n" + RUNTIME_MARKER + "\n" + "".join(f"{r}\n" for r in added)
    return text, added


def input_sha256(project_dir: Path, env: EnvironmentConfig) -> str:
    """sha256 of requirements.in after the runtime's requirements are added."""
    text, _ = effective_input(project_dir / env.requirements)
    return sha256_bytes(text.encode("utf-8"))


def check_lock(project_dir: Path, env: EnvironmentConfig) -> LockStatus:
    """Return the lock's status; raise StaleLockError when requirements.in changed since."""
    lock = project_dir / env.lock
    if not lock.is_file():
        raise InputError(f"no lock at {lock}", "run `bundler lock` to write it")
    expected = input_sha256(project_dir, env)
    found = lock_header_input_sha(lock)
    if found != expected:
        raise StaleLockError(lock, expected, found)
    return LockStatus(lock, expected, lock_sha256(lock))


# --- pip configuration -------------------------------------------------------------------------


def _pip_config_files() -> list[Path]:
    """pip's config files, lowest precedence first (pip's `configuration.py` order)."""
    if os.environ.get("PIP_CONFIG_FILE") == os.devnull:
        return []
    home = Path.home()
    xdg_dirs = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs] + [Path("/etc/pip.conf")]
    files += [Path(sys.prefix) / "pip.conf", home / ".pip" / "pip.conf"]
    files.append(Path(os.environ.get("XDG_CONFIG_HOME", home / ".config")) / "pip" / "pip.conf")
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    return files


def pip_sources() -> PackageSources:
    """Index and find-links URLs pip would use here ([global], [install], then PIP_* variables)."""
    values: dict[str, str] = {}
    for path in _pip_config_files():
        if not path.is_file():
            continue
        parser = configparser.RawConfigParser()
        parser.read(path, encoding="utf-8")
        for section in ("global", "install"):
            if parser.has_section(section):
                for key in ("index-url", "extra-index-url", "find-links", "no-index"):
                    if parser.has_option(section, key):
                        values[key] = parser.get(section, key)
    for key in ("index-url", "extra-index-url", "find-links", "no-index"):
        env_value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env_value is not None:
            values[key] = env_value
    index = values.get("index-url", "https://pypi.org/simple").strip()
    if values.get("no-index", "").lower() in {"1", "true", "yes", "on"}:
        index = ""
    return PackageSources(
        index,
        tuple(values.get("extra-index-url", "").split()),
        tuple(values.get("find-links", "").split()),
    )


# --- resolvers -----------------------------------------------------------------------------------


def resolver_version(resolver: str) -> str:
    from importlib import metadata

    if resolver == "pip-tools":
        return f"{metadata.version('pip-tools')} (pip {metadata.version('pip')})"
    try:
        return metadata.version("uv")
    except metadata.PackageNotFoundError:
        uv = _uv_binary()
        out = subprocess.run([uv, "--version"], capture_output=True, text=True, check=True).stdout
        return out.split()[1]


def _uv_binary() -> str:
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found]

        return str(find_uv_bin())
    except ImportError:
        found = shutil.which("uv")
        if not found:
            raise EnvironmentSetupError(
                'resolver = "uv" but uv is not installed',
                "pip install uv (or `pip install bundler-repro[uv]`)",
            ) from None
        return found


def _source_args(sources: PackageSources) -> list[str]:
    args = ["--index-url", sources.index_url] if sources.index_url else ["--no-index"]
    for url in sources.extra_index_urls:
        args += ["--extra-index-url", url]
    for url in sources.find_links:
        args += ["--find-links", url]
    return args


def _check_target(env: EnvironmentConfig, python: str) -> None:
    host_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    host_platform = f"{platform.system().lower()}/{platform.machine()}"
    if env.platform not in _UV_PLATFORMS:
        raise InputError(
            f"environment.platform = {env.platform!r} is not supported",
            'use platform = "linux/x86_64"',
        )
    if env.resolver == "pip-tools" and (python != host_python or host_platform not in _UV_PLATFORMS):
        raise EnvironmentSetupError(
            f"pip-tools resolves for the interpreter running it "
            f"(Python {host_python}, {host_platform}), "
            f"not for the target (Python {python}, {env.platform})",
            'set resolver = "uv" in [environment] (uv resolves for any target), '
            f"or run `bundler lock` under Python {python} on linux/x86_64",
        )


def _resolver_command(
    env: EnvironmentConfig, python: str, sources: PackageSources, offline: bool, output: Path
) -> list[str]:
    if env.resolver == "pip-tools":
        # --allow-unsafe pins setuptools: torch requires it; --require-hashes refuses the unpinned.
        return [
            sys.executable,
            "-m",
            "piptools",
            "compile",
            "--generate-hashes",
            "--allow-unsafe",
            "--strip-extras",
            "--no-header",
            "--no-emit-index-url",
            "--no-emit-find-links",
            "--no-emit-trusted-host",
            "--quiet",
            "--output-file",
            str(output),
            *_source_args(sources),
            "requirements.in",
        ]
    # unsafe-best-match: consider every source as pip does, so both resolvers agree.
    command = [
        _uv_binary(),
        "pip",
        "compile",
        "--generate-hashes",
        "--no-header",
        "--quiet",
        "--python-version",
        python,
        "--python-platform",
        _UV_PLATFORMS[env.platform],
        "--index-strategy",
        "unsafe-best-match",
        "--output-file",
        str(output),
        *_source_args(sources),
        "requirements.in",
    ]
    if offline:
        command.insert(3, "--offline")
    return command


def _run_resolver(
    env: EnvironmentConfig,
    python: str,
    text: str,
    sources: PackageSources,
    offline: bool,
    requirements: Path,
) -> str:
    with tempfile.TemporaryDirectory(prefix="bundler-lock-") as tmp:
        work = Path(tmp)
        (work / "requirements.in").write_text(text, encoding="utf-8")
        output = work / "requirements.txt"
        child_env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in {
                "PIP_INDEX_URL",
                "PIP_EXTRA_INDEX_URL",
                "PIP_FIND_LINKS",
                "PIP_NO_INDEX",
                "UV_INDEX_URL",
                "UV_EXTRA_INDEX_URL",
                "UV_FIND_LINKS",
                "UV_INDEX",
            }
        }
        # Sources go on the command line, so the lock's header records exactly what was used.
        child_env["PIP_CONFIG_FILE"] = os.devnull
        command = _resolver_command(env, python, sources, offline, output)
        done = subprocess.run(command, cwd=work, env=child_env, capture_output=True, text=True)
        if done.returncode != 0:
            detail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            if _UNRESOLVABLE.search(done.stderr + done.stdout):
                raise UnresolvableRequirementsError(requirements, env.resolver, detail)
            raise EnvironmentSetupError(
                f"{env.resolver} failed (exit {done.returncode}):\n{detail}",
                "BUNDLER_DEBUG=1 shows the command; check the index is reachable",
            )
        return output.read_text(encoding="utf-8")


def _variant_sources(pins: list[LockedRequirement], sources: PackageSources) -> dict[str, str]:
    """For each pin with a local version label (+cu128, +cpu), the source that serves it."""
    found = {}
    for pin in pins:
        if "+" not in pin.version:
            continue
        found[f"{pin.name}=={pin.version}"] = _serving_source(pin, sources) or "unknown"
    return found


def _serving_source(pin: LockedRequirement, sources: PackageSources) -> str | None:
    stem = f"{pin.name.replace('-', '_')}-{pin.version}-".lower()
    for link in sources.find_links:
        folder = Path(link.removeprefix("file://"))
        if folder.is_dir() and any(p.name.lower().startswith(stem) for p in folder.iterdir()):
            return strip_credentials(link)
    for index in (sources.index_url, *sources.extra_index_urls):
        page = _index_page(index, pin.name)
        if page and stem in page.lower().replace("%2b", "+"):
            return strip_credentials(index)
    return None


def _index_page(index: str, name: str) -> str | None:
    url = index.rstrip("/") + f"/{name}/"
    if url.startswith("file://"):
        path = Path(urllib.parse.urlsplit(url).path) / "index.html"
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None

    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (index URLs are http(s))
            return response.read().decode("utf-8", errors="replace")
    except OSError:
        return None


def _is_reachable(url: str, timeout: float = 5.0) -> bool:
    """One quick request: an unreachable index makes pip retry every page fetch (minutes in all)."""
    if _is_local(url):
        return True

    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 (index URLs are http(s))
            return True
    except OSError:
        return False


def _header(
    input_sha: str,
    resolver: str,
    version: str,
    python: str,
    env: EnvironmentConfig,
    sources: PackageSources,
    torch_index: str,
    image: str,
    variants: dict[str, str],
) -> str:
    shown = sources.redacted()
    lines = [
        "#",
        "# This file is generated by `bundler lock` for the target below; do not edit it.",
        "# To regenerate it after changing requirements.in, run:",
        "#",
        "#    bundler lock",
        "#",
        f"# format: {LOCK_FORMAT}",
        f"# input-sha256: {input_sha}",
        f"# resolver: {resolver} {version}",
        f"# target: python {python}, {env.platform} (image {image})",
        f"# index-url: {shown.index_url or '(none)'}",
        *(f"# extra-index-url: {u}" for u in shown.extra_index_urls),
        *(f"# find-links: {u}" for u in shown.find_links),
        f"# torch-index: {strip_credentials(torch_index)}",
        *(f"# variant: {pin} from {source}" for pin, source in sorted(variants.items())),
        "#",
    ]
    return "\n".join(lines) + "\n"


def cache_dir() -> Path:
    """Lock results, under the one bundler cache (BUNDLER_CACHE) the venvs and models use too."""
    from bundler.paths import cache_dir as bundler_cache

    return bundler_cache() / "locks"


def _target(env: EnvironmentConfig) -> tuple[str, str, str]:
    """(python, torch index, image name) of the environment's catalog image."""
    from bundler.recipe.images import find_image

    entry = find_image(env.image)
    if env.python != entry.python:
        raise InputError(
            f"environment.python = {env.python}, but the image {entry.name} carries Python {entry.python}",
            f'set python = "{entry.python}" or choose an image with Python {env.python}',
        )
    return entry.python, entry.torch_index, entry.name


def write_lock(project_dir: Path, env: EnvironmentConfig, *, offline: bool = False) -> LockResult:
    """Resolve requirements.in for the target and write requirements.lock; cached by every input."""
    started = time.perf_counter()
    requirements = project_dir / env.requirements
    text, added = effective_input(requirements)
    input_sha = sha256_bytes(text.encode("utf-8"))
    python, torch_index, image = _target(env)
    _check_target(env, python)
    version = resolver_version(env.resolver)
    sources = pip_sources()
    torch_index_used = bool(torch_index) and not offline and _is_reachable(torch_index)
    if torch_index_used and torch_index not in (sources.index_url, *sources.extra_index_urls):
        # The image's torch index goes first among the extras so its CUDA variant is a candidate.
        sources = PackageSources(sources.index_url, (torch_index, *sources.extra_index_urls), sources.find_links)
    if torch_index and not torch_index_used:
        print(
            f"bundler: the image's torch index {strip_credentials(torch_index)} is not reachable; "
            "locking from the configured sources only",
            file=sys.stderr,
        )
        torch_index += " (not reachable at lock time; not used)"

    def key_for(used: PackageSources) -> str:
        # Credentials never enter the key's text; a hash of the raw URLs tells two tokens apart.
        fields = {
            "format": LOCK_FORMAT,
            "input": text,
            "resolver": env.resolver,
            "version": version,
            "python": python,
            "platform": env.platform,
            "sources": canonical_json(used.redacted().__dict__),
            "raw_sources": sha256_bytes(repr(used).encode()),
            "image": image,
        }
        return sha256_bytes(canonical_json(fields).encode("utf-8"))

    cache = cache_dir()
    used = sources
    hit = cache / f"{key_for(sources)}.lock"
    if offline and not hit.is_file():
        used = sources.local_only()
        hit = cache / f"{key_for(used)}.lock"
    cached = hit.is_file()
    if cached:
        content = hit.read_text(encoding="utf-8")
    else:
        body = _run_resolver(env, python, text, used, offline, requirements)
        body = re.sub(r"\n{3,}", "\n\n", body.replace("\r\n", "\n")).lstrip("\n")
        variants = _variant_sources(parse_lock_text(body), used)
        content = _header(input_sha, env.resolver, version, python, env, used, torch_index, image, variants) + body
        atomic_write_text(hit, content)
    lock = project_dir / env.lock
    if not lock.is_file() or lock.read_text(encoding="utf-8") != content:
        atomic_write_text(lock, content)
    from bundler.recipe.pylock import write_pylock  # its PEP 751 twin (issue 21)

    uv = _uv_binary() if env.resolver == "uv" else None
    write_pylock(lock, env.resolver, python, _UV_PLATFORMS.get(env.platform, ""), used, offline, cache, uv)
    variants = dict(re.findall(r"^# variant: (\S+) from (.+)$", content, flags=re.M))
    return LockResult(
        lock,
        input_sha,
        sha256_bytes(content.encode("utf-8")),
        env.resolver,
        version,
        cached,
        time.perf_counter() - started,
        added,
        variants,
    )
