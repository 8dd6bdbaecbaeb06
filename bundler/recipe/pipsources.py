"""Where the resolver looks: pip's configured indexes and find-links, and which one serves a pin.

`bundler lock` puts these on the resolver's command line (never in its environment), so the lock's
header records exactly what was used, with credentials stripped.
"""

from __future__ import annotations

import configparser
import os
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bundler.bundle.lockfile import LockedRequirement


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
        local = [u for u in (self.index_url, *self.extra_index_urls) if is_local(u)]
        return PackageSources(
            local[0] if local else "",
            tuple(local[1:]),
            tuple(u for u in self.find_links if is_local(u)),
        )


def strip_credentials(url: str) -> str:
    """Remove user:password@ from a URL (pip-style credentials); other text is kept."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


def is_local(url: str) -> bool:
    """A file:// URL or a plain folder path."""
    return url.startswith("file://") or (bool(url) and "://" not in url)


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


def variant_sources(pins: list[LockedRequirement], sources: PackageSources) -> dict[str, str]:
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


def is_reachable(url: str, timeout: float = 5.0) -> bool:
    """One quick request: an unreachable index makes pip retry every page fetch (minutes in all)."""
    if is_local(url):
        return True

    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 (index URLs are http(s))
            return True
    except OSError:
        return False
