"""Download the lock's wheels on the host; check each against the lock's hashes before any install.

Containers cannot reach (or verify the TLS of) an index, so images install from this folder with
`pip install --no-index --require-hashes --no-deps`; a file whose sha256 the lock does not name is
refused here and never reaches a build.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bundler.bundle.hashing import sha256_file
from bundler.bundle.lockfile import LockedRequirement, parse_lock
from bundler.errors import EnvironmentSetupError, InputError, WheelHashMismatchError
from bundler.recipe.lock import cache_dir

# pip 23 does not expand --platform to older manylinux tags, so every glibc up to the catalog
# images' oldest (Ubuntu 22.04: 2.35) is named; 2_17 = manylinux2014, 2_12 = 2010, 2_5 = manylinux1.
_TARGET_PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(35, 4, -1)] + ["linux_x86_64"]
_HASH_MISMATCH = re.compile(r"Expected sha256 ([0-9a-f]{64})\s+Got\s+([0-9a-f]{64})")


def _wheel_key(filename: str) -> tuple[str, str] | None:
    """(canonical name, version) of a wheel file name, or None for anything else."""
    if not filename.endswith(".whl"):
        return None
    parts = filename[: -len(".whl")].split("-")
    if len(parts) < 5:
        return None
    return re.sub(r"[-_.]+", "-", parts[0]).lower(), parts[1].replace("_", "-")


def _target_python(lock_path: Path) -> str:
    with open(lock_path, encoding="utf-8") as handle:
        for line in handle:
            match = re.match(r"^# target: python (\d+\.\d+)", line)
            if match:
                return match.group(1)
            if not line.startswith("#"):
                break
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def wheel_cache() -> Path:
    return cache_dir().parent / "wheels"


def _find_cached(pin: LockedRequirement, cache: Path) -> Path | None:
    """The cached wheel for a pin; the cache is content-addressed (<sha256>/<file name>)."""
    for digest in pin.hashes:
        folder = cache / digest
        if folder.is_dir():
            for path in folder.iterdir():
                if _wheel_key(path.name) == (pin.name, pin.version):
                    return path
    return None


def _pip_download(pins: list[LockedRequirement], into: Path, python: str) -> None:
    """pip download exactly these pins (with their hashes) for the target into `into`."""
    with tempfile.TemporaryDirectory(prefix="bundler-wheels-") as tmp:
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text(
            "".join(
                f"{p.name}=={p.version}{' ; ' + p.marker if p.marker else ''} "
                + " ".join(f"--hash=sha256:{h}" for h in p.hashes)
                + "\n"
                for p in pins
            ),
            encoding="utf-8",
        )
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
            "--python-version",
            python,
            *(arg for platform in _TARGET_PLATFORMS for arg in ("--platform", platform)),
            "--implementation",
            "cp",
            "--dest",
            str(into),
            "-r",
            str(reqs),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        output = done.stderr + done.stdout
        mismatch = _HASH_MISMATCH.search(output)
        if mismatch:
            name = re.search(r"^\s+(\S+)==\S+ from (\S+)", output, flags=re.M)
            raise WheelHashMismatchError(
                name.group(2) if name else "a downloaded wheel",
                mismatch.group(2),
                [mismatch.group(1)],
            )
        tail = "\n".join(output.strip().splitlines()[-12:])
        raise EnvironmentSetupError(
            f"pip download failed (exit {done.returncode}):\n{tail}",
            "check the index is reachable; a package with no wheel for the target cannot go into a hermetic image",
        )


def verify_wheelhouse(lock_path: Path, folder: Path) -> dict[str, str]:
    """Check `folder` holds one wheel per pin with a hash the lock names; return {file: sha}."""
    pins = {(p.name, p.version): p for p in parse_lock(lock_path)}
    seen: dict[tuple[str, str], str] = {}
    hashes: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        key = _wheel_key(path.name)
        if key is None or key not in pins:
            raise InputError(f"{path}: not a wheel the lock pins", "the wheelhouse may hold only locked wheels")
        digest = sha256_file(path)
        if digest not in pins[key].hashes:
            raise WheelHashMismatchError(path, digest, pins[key].hashes)
        if key in seen:
            raise InputError(
                f"{path}: a second wheel for {key[0]}=={key[1]} (also {seen[key]})",
                "keep one wheel per pinned requirement",
            )
        seen[key] = path.name
        hashes[path.name] = digest
    missing = sorted(f"{n}=={v}" for (n, v) in pins if (n, v) not in seen)
    if missing:
        raise InputError(f"{folder}: no wheel for {', '.join(missing)}", "run the download again")
    return hashes


def download_wheelhouse(lock_path: Path, dest: Path) -> Path:
    """Fill `dest` with one verified wheel per pin (from the host cache, else pip download)."""
    pins = parse_lock(lock_path)
    unhashed = [f"{p.name}=={p.version}" for p in pins if not p.hashes]
    if unhashed:
        raise InputError(f"{lock_path}: no hashes for {', '.join(unhashed)}", "run `bundler lock` again")
    cache = wheel_cache()
    cache.mkdir(parents=True, exist_ok=True)
    missing = [p for p in pins if _find_cached(p, cache) is None]
    if missing:
        with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:
            _pip_download(missing, Path(tmp), _target_python(lock_path))
            for path in Path(tmp).iterdir():
                key = _wheel_key(path.name)
                pin = next((p for p in missing if (p.name, p.version) == key), None)
                digest = sha256_file(path)
                if pin is None or digest not in pin.hashes:
                    raise WheelHashMismatchError(path.name, digest, pin.hashes if pin else [])
                (cache / digest).mkdir(exist_ok=True)
                os.replace(path, cache / digest / path.name)
    dest.mkdir(parents=True, exist_ok=True)
    for pin in pins:
        source = _find_cached(pin, cache)
        if source is None:
            raise EnvironmentSetupError(f"no wheel for {pin.name}=={pin.version} after the download")
        target = dest / source.name
        if not target.exists():
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
    verify_wheelhouse(lock_path, dest)
    return dest
