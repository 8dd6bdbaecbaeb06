"""pylock.toml (PEP 751) beside requirements.lock: the same pins and hashes in the standard lock format.

Written by uv (`uv pip compile requirements.lock --format pylock.toml`) where resolver = "uv", so the
file is what uv itself would lock; converted otherwise: each pin's files are looked up on the same
sources the lock used (PEP 691 JSON or PEP 503 HTML index pages, find-links folders) and kept when
their sha256 is one the lock allows. Either way the result is checked against requirements.lock
(names, versions, hashes) and parsed with `packaging.pylock`, and `uv pip sync pylock.toml` installs it.

[tool.bundler] records the sha256 of the requirements.lock it was made from, so a stale pylock.toml is
noticed and rewritten. It sits in data/recipe/, covered by the bundle ID.
"""

from __future__ import annotations

import base64
import html.parser
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import tomllib

from bundler.bundle.atomic import atomic_write_text
from bundler.bundle.hashing import canonical_json, sha256_bytes, sha256_file
from bundler.bundle.lockfile import LockedRequirement, canonical_name, parse_lock
from bundler.errors import EnvironmentSetupError, InputError
from bundler.recipe.resolvers import source_args

PYLOCK = "pylock.toml"
_JSON_SIMPLE = "application/vnd.pypi.simple.v1+json"
_SDIST = (".tar.gz", ".zip")
_USERINFO = re.compile(r"\b(https?://)[^/@\s\"']+@")


def pylock_path(lock: Path) -> Path:
    """pylock.toml beside requirements.lock; pylock.<name>.toml beside any other lock name (PEP 751 naming)."""
    if lock.name == "requirements.lock":
        return lock.with_name(PYLOCK)
    return lock.with_name(f"pylock.{re.sub(r'[^A-Za-z0-9_-]+', '-', lock.stem)}.toml")


def write_pylock(
    lock: Path, resolver: str, python: str, uv_platform: str, sources: Any, offline: bool, cache: Path, uv: str | None
) -> Path:
    """Write pylock.toml beside `lock` (cached in `cache` by the lock's bytes, resolver and sources); check it.

    `sources` is the lock's recipe.lock.PackageSources; `uv` the uv binary when resolver = "uv".
    """
    lock_sha = sha256_file(lock)
    key = sha256_bytes(canonical_json({"lock": lock_sha, "resolver": resolver, "python": python,
                                       "platform": uv_platform, "sources": repr(sources)}).encode())  # fmt: skip
    cached = cache / f"{key}.pylock.toml"
    if cached.is_file():
        text = cached.read_text(encoding="utf-8")
    else:
        if uv is not None:
            body = _with_uv(uv, lock, python, uv_platform, sources, offline)
        else:
            body = _converted(lock, python, sources)
        # Index credentials never reach the file: the lock's header strips them, and so does this.
        body = _USERINFO.sub(r"\1", body)
        text = body.rstrip("\n") + f'\n\n[tool.bundler]\nrequirements-lock-sha256 = "{lock_sha}"\n'
        problems = pylock_findings(text, parse_lock(lock))
        if problems:
            raise EnvironmentSetupError(
                f"{PYLOCK} made by {resolver} does not match {lock.name}: " + "; ".join(problems[:5]),
                "report this with the lock attached; requirements.lock itself is unaffected",
            )
        atomic_write_text(cached, text)
    target = pylock_path(lock)
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        atomic_write_text(target, text)
    return target


def is_current(lock: Path) -> bool:
    """True when pylock.toml exists beside `lock` and was made from its current bytes."""
    target = pylock_path(lock)
    if not target.is_file():
        return False
    try:
        recorded = tomllib.loads(target.read_text(encoding="utf-8")).get("tool", {}).get("bundler", {})
    except tomllib.TOMLDecodeError:
        return False
    return recorded.get("requirements-lock-sha256") == sha256_file(lock)


def pylock_findings(text: str, pins: list[LockedRequirement]) -> list[str]:
    """Parse with packaging.pylock (PEP 751's reference reader) and compare names, versions and hashes."""
    from packaging.pylock import Pylock, PylockValidationError

    try:
        pylock = Pylock.from_dict(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, PylockValidationError) as exc:
        return [f"not a valid PEP 751 lock ({exc})"]
    found: dict[str, tuple[str, set[str]]] = {}
    for package in pylock.packages:
        files = [*(package.wheels or ()), *([package.sdist] if package.sdist else [])]
        hashes = {f.hashes.get("sha256", "") for f in files}
        found[canonical_name(str(package.name))] = (str(package.version), hashes)
    problems = []
    for pin in pins:
        version, hashes = found.pop(pin.name, ("", set()))
        if version != pin.version:
            problems.append(f"{pin.name}: {version or 'missing'} instead of {pin.version}")
        elif hashes != set(pin.hashes):
            problems.append(f"{pin.name}: hashes differ ({len(hashes)} files, the lock allows {len(pin.hashes)})")
    problems += [f"{name}: not in the lock" for name in sorted(found)]
    return problems


def _with_uv(uv: str, lock: Path, python: str, uv_platform: str, sources: Any, offline: bool) -> str:
    """uv's own pylock.toml for the lock's exact pins (every pin is `==` with hashes, so nothing moves)."""
    with tempfile.TemporaryDirectory(prefix="bundler-pylock-") as work:
        shutil.copyfile(lock, Path(work) / "requirements.lock")
        command = [
            *(uv, "pip", "compile", "requirements.lock", "--format", "pylock.toml", "--no-header", "--quiet"),
            *("--python-version", python, "--python-platform", uv_platform, "--index-strategy", "unsafe-best-match"),
            *("--output-file", PYLOCK, *source_args(sources)),
        ]
        if offline:
            command.append("--offline")
        # Sources go on the command line (as for the lock itself), never from the caller's environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_INDEX", "UV_EXTRA_INDEX", "UV_FIND"))}
        done = subprocess.run(command, cwd=work, capture_output=True, text=True, env={**env, "UV_NO_CONFIG": "1"})
        if done.returncode != 0:
            raise EnvironmentSetupError(
                f"uv could not write {PYLOCK} (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}",
                "check that the lock's sources are reachable; BUNDLER_DEBUG=1 shows the traceback",
            )
        return _only_locked_files((Path(work) / PYLOCK).read_text(encoding="utf-8"), parse_lock(lock))


def _only_locked_files(text: str, pins: list[LockedRequirement]) -> str:
    """uv lists every file of a version; keep those whose sha256 requirements.lock allows, as pip would."""
    import tomli_w

    data = tomllib.loads(text)
    allowed = {pin.name: set(pin.hashes) for pin in pins}
    listed = {f.get("hashes", {}).get("sha256") for p in data.get("packages", []) for f in _files(p)}
    if listed <= set().union(*allowed.values()):
        return text  # nothing to drop: keep uv's bytes as uv wrote them
    for package in data.get("packages", []):
        keep = allowed.get(canonical_name(package.get("name", "")), set())
        if "wheels" in package:
            package["wheels"] = [w for w in package["wheels"] if w.get("hashes", {}).get("sha256") in keep]
            if not package["wheels"]:
                del package["wheels"]
        if "sdist" in package and package["sdist"].get("hashes", {}).get("sha256") not in keep:
            del package["sdist"]
    return tomli_w.dumps(data)


def _files(package: dict[str, Any]) -> list[dict[str, Any]]:
    return [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]


def _converted(lock: Path, python: str, sources: Any) -> str:
    """Build pylock.toml from requirements.lock and the files its sources serve for each pin."""
    import tomli_w

    packages = []
    for pin in parse_lock(lock):
        files = _files_for(pin, sources)
        missing = sorted(set(pin.hashes) - set(files))
        if missing:
            raise InputError(
                f"{lock}: {pin.name}=={pin.version}: no source serves a file with sha256 {missing[0][:12]}",
                'the lock\'s sources changed since `bundler lock`; run it again (or use resolver = "uv")',
            )
        entry: dict[str, Any] = {"name": pin.name, "version": pin.version}
        if pin.marker:
            entry["marker"] = pin.marker
        chosen = [files[h] for h in sorted(pin.hashes)]
        wheels = sorted((f for f in chosen if f["name"].endswith(".whl")), key=lambda f: f["name"])
        sdists = [f for f in chosen if f["name"].endswith(_SDIST)]
        if sdists:
            entry["sdist"] = sdists[0]
        if wheels:
            entry["wheels"] = wheels
        packages.append(entry)
    data = {"lock-version": "1.0", "created-by": "bundler", "requires-python": f"=={python}.*", "packages": packages}
    return tomli_w.dumps(data)


def _files_for(pin: LockedRequirement, sources: Any) -> dict[str, dict[str, Any]]:
    """{sha256: pylock file entry} for the files of pin's version, from every source, first source wins."""
    name = re.escape(pin.name).replace("\\-", "-").replace("-", "[-_.]")
    stem = re.compile(rf"^{name}-{re.escape(pin.version)}(-|\.tar\.gz$|\.zip$)", re.I)
    found: dict[str, dict[str, Any]] = {}
    for index in (sources.index_url, *sources.extra_index_urls):
        if index:
            for entry in _index_files(index, pin.name):
                if stem.match(entry["name"]) and entry["hashes"]["sha256"] in pin.hashes:
                    found.setdefault(entry["hashes"]["sha256"], entry)
    for link in sources.find_links:
        folder = Path(urllib.parse.urlsplit(link).path if link.startswith("file:") else link)
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if stem.match(path.name) and set(pin.hashes) - set(found):
                sha = sha256_file(path)
                if sha in pin.hashes:
                    found.setdefault(sha, {"name": path.name, "url": path.resolve().as_uri(),
                                           "size": path.stat().st_size, "hashes": {"sha256": sha}})  # fmt: skip
    return found


def _index_files(index: str, name: str) -> list[dict[str, Any]]:
    """Files of one project on a simple index: PEP 691 JSON when the index speaks it, else PEP 503 HTML."""
    base = index.rstrip("/") + f"/{name}/"
    if base.startswith("file:"):
        page = Path(urllib.parse.urlsplit(base).path) / "index.html"
        return _html_files(page.read_text(encoding="utf-8", errors="replace"), base) if page.is_file() else []
    headers = {"Accept": f"{_JSON_SIMPLE}, text/html;q=0.1"}
    parts = urllib.parse.urlsplit(base)
    if parts.username is not None:  # urllib takes no userinfo in a URL: send it as pip would, Basic auth
        userinfo = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
        base = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    request = urllib.request.Request(base, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (index URLs are http(s))
            body = response.read(64 * 1024 * 1024)
            kind = response.headers.get("Content-Type", "")
    except OSError:
        return []
    if _JSON_SIMPLE in kind:
        files = []
        for item in json.loads(body).get("files", []):
            sha = (item.get("hashes") or {}).get("sha256")
            if sha:
                url = urllib.parse.urljoin(base, item["url"]).partition("#")[0]
                entry = {"name": item["filename"], "url": url, "hashes": {"sha256": sha}}
                if isinstance(item.get("size"), int):
                    entry["size"] = item["size"]
                if item.get("upload-time"):
                    entry["upload-time"] = datetime.fromisoformat(item["upload-time"].replace("Z", "+00:00"))
                files.append(entry)
        return files
    return _html_files(body.decode("utf-8", errors="replace"), base)


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


def _html_files(page: str, base: str) -> list[dict[str, Any]]:
    parser = _Links()
    parser.feed(page)
    files = []
    for href in parser.hrefs:
        url, _, fragment = urllib.parse.urljoin(base, href).partition("#")
        if fragment.startswith("sha256="):
            name = urllib.parse.unquote(url.rsplit("/", 1)[-1])
            files.append({"name": name, "url": url, "hashes": {"sha256": fragment.removeprefix("sha256=")}})
    return files
