"""The local base image, built reproducibly: the same Debian packages give the same digest on any machine.

`docker import` writes the current time into the image config, so every machine (and every rerun) got a
new digest and a committed image.lock.json pinned an image no other machine had. Here the digest is a
pure function of the debootstrapped files: the files that record when, where or in what order the
build ran are removed or fixed (`normalise_rootfs`), the layer is a name-sorted tar with every mtime set
to SOURCE_DATE_EPOCH (the Date of the suite's Release file) and gzip without a name or time, and the
config's `created` is that same epoch. Image, config and layer go to the registry through its HTTP API
(`push`), never through `docker import`/`docker push`, which would stamp times of their own.

What still differs between machines: the Debian package versions (bookworm's main suite moves at each
point release, every two months or so), so two machines agree when the suite's Release file agrees.

.ci/setup-docker.sh runs `python3 -m bundler.recipe.base_image build ROOTFS REFERENCE` after debootstrap,
and `... check REFERENCE` first, to skip all of it when the registry already holds an image this builder made.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

from bundler.errors import BundlerError, EnvironmentSetupError, InputError

BUILDER = "bundler.base-image/1"
LABEL_BUILDER = "org.bundler.base-image.builder"
LABEL_PACKAGES = "org.bundler.base-image.packages-sha256"
LABEL_SUITE_DATE = "org.bundler.base-image.suite-date"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
SOURCES = "deb http://deb.debian.org/debian bookworm main\n"
ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]

# Removed: logs, caches and state that record the build's time, host or order, none needed at run time.
# (Two debootstraps here differed only in var/log and ldconfig's aux-cache; /etc/ld.so.cache and the
# .pyc files py3compile wrote were identical, so they stay.)
_REMOVE = (
    "var/log",
    "var/cache/apt",
    "var/cache/ldconfig",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
    "var/lib/apt/lists",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "var/lib/dpkg/statoverride-old",
    "var/lib/dpkg/available-old",
    "var/backups",
    "debootstrap",
)
# Emptied, kept as directories: the engine mounts its own /dev, /proc, /sys, /run, /tmp.
_EMPTY_DIRS = ("dev", "proc", "sys", "run", "tmp", "var/tmp")
# Written by debootstrap from the host: the engine bind-mounts its own at run time.
_HOST_COPIES = ("etc/hostname", "etc/resolv.conf", "etc/hosts", "etc/machine-id")


@dataclass(frozen=True)
class BuiltImage:
    """What `push` sent: the manifest digest (what image.lock.json pins), the config and layer digests."""

    digest: str
    config_digest: str
    layer_digest: str
    diff_id: str
    layer_size: int
    packages_sha256: str
    epoch: int


def suite_epoch(rootfs: Path) -> int:
    """SOURCE_DATE_EPOCH for the image: the environment's, else the Date of the Release file debootstrap read."""
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        return int(os.environ["SOURCE_DATE_EPOCH"])
    lists = rootfs / "var/lib/apt/lists"
    for release in sorted(lists.glob("*_Release")) + sorted(lists.glob("*_InRelease")):
        match = re.search(r"^Date: (.+)$", release.read_text(encoding="utf-8", errors="replace"), re.M)
        if match:
            return int(parsedate_to_datetime(match.group(1)).timestamp())
    raise InputError(
        f"{rootfs}: no Release file with a Date under var/lib/apt/lists",
        "pass a rootfs straight from debootstrap, or set SOURCE_DATE_EPOCH",
    )


def package_list(rootfs: Path) -> str:
    """`name version arch` per installed package, sorted: the Debian input the digest depends on."""
    status = (rootfs / "var/lib/dpkg/status").read_text(encoding="utf-8")
    rows = []
    for stanza in status.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", stanza, re.M))
        if "Package" in fields and fields.get("Status", "").endswith(" installed"):
            rows.append(f"{fields['Package']} {fields['Version']} {fields.get('Architecture', '')}")
    return "\n".join(sorted(rows)) + "\n"


def normalise_rootfs(rootfs: Path, epoch: int) -> None:
    """Remove or fix every file that differs between two debootstraps of the same packages."""
    for relative in _REMOVE:
        path = rootfs / relative
        if path.is_dir() and not path.is_symlink():
            for child in path.iterdir():
                _remove(child)
        elif path.exists() or path.is_symlink():
            _remove(path)
    for relative in _EMPTY_DIRS:
        path = rootfs / relative
        if path.is_dir():
            for child in path.iterdir():
                _remove(child)
    for relative in _HOST_COPIES:
        path = rootfs / relative
        if path.exists() or path.is_symlink():
            path.unlink()
            path.write_bytes(b"")
            path.chmod(0o644)  # debootstrap copied the host's file and its mode
    sources = rootfs / "etc/apt/sources.list"
    sources.write_text(SOURCES, encoding="utf-8")  # the mirror this machine used is no input of the image
    sources.chmod(0o644)
    _fix_shadow_dates(rootfs / "etc/shadow", epoch)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _fix_shadow_dates(path: Path, epoch: int) -> None:
    """The `last changed` field is the day the account was made: set it to the epoch's day."""
    if not path.is_file():
        return
    day = str(epoch // 86400)
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2]:
            fields[2] = day
        lines.append(":".join(fields))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_layer(rootfs: Path, target: Path, epoch: int) -> tuple[str, str, int]:
    """Write the rootfs as a reproducible gzipped tar; return (diff_id, layer digest, layer size)."""
    # GNU tar's reproducible-builds recipe: name order, one mtime, numeric owners, no atime/ctime.
    tar = subprocess.Popen(
        [
            "tar",
            "-C",
            str(rootfs),
            "--sort=name",
            f"--mtime=@{epoch}",
            "--numeric-owner",
            "--format=posix",
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            "--no-xattrs",
            "--no-acls",
            "--no-selinux",
            "-cf",
            "-",
            ".",
        ],
        stdout=subprocess.PIPE,
    )
    plain = hashlib.sha256()
    assert tar.stdout is not None
    with target.open("wb") as sink:
        hashed = _HashingWriter(sink)
        # No file name and mtime 0 in the gzip header; zlib at a fixed level gives the same bytes for the same tar.
        with gzip.GzipFile(filename="", mode="wb", fileobj=hashed, mtime=0, compresslevel=6) as gz:  # type: ignore[arg-type]
            while chunk := tar.stdout.read(1 << 20):
                plain.update(chunk)
                gz.write(chunk)
    if tar.wait() != 0:
        raise EnvironmentSetupError(f"tar of {rootfs} failed with exit {tar.returncode}", "see tar's message above")
    return "sha256:" + plain.hexdigest(), "sha256:" + hashed.sha256.hexdigest(), hashed.size


class _HashingWriter:
    """A file-like sink that hashes and counts what passes through it on the way to `sink`."""

    def __init__(self, sink: object):
        self.sink = sink
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.sink.write(data)  # type: ignore[attr-defined, no-any-return]

    def flush(self) -> None:
        self.sink.flush()  # type: ignore[attr-defined]


def image_config(diff_id: str, epoch: int, packages_sha256: str) -> bytes:
    """The image config as canonical JSON bytes; `created` is the epoch, so the bytes never carry today."""
    created = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "Env": ENV,
            "Cmd": ["python3"],
            "Labels": {
                LABEL_BUILDER: BUILDER,
                LABEL_PACKAGES: packages_sha256,
                LABEL_SUITE_DATE: created,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": f"{BUILDER}: debootstrap --variant=minbase bookworm"}],
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def manifest_bytes(config: bytes, layer_digest: str, layer_size: int) -> bytes:
    """The Docker schema 2 manifest (what the registry and `bundler lock` Accept) as canonical JSON bytes."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": _digest(config)},
        "layers": [{"mediaType": LAYER_TYPE, "size": layer_size, "digest": layer_digest}],
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _registry_parts(reference: str) -> tuple[str, str, str]:
    registry, _, rest = reference.partition("/")
    repository, _, tag = rest.rpartition(":")
    if not registry or not repository or not tag:
        raise InputError(f"not a registry/repository:tag reference: {reference!r}", "pass e.g. 127.0.0.1:5000/name:tag")
    return registry, repository, tag


def _request(method: str, url: str, *, data: object = None, headers: dict[str, str] | None = None) -> object:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})  # type: ignore[arg-type]
    return urllib.request.urlopen(request, timeout=600)  # noqa: S310 (the local registry, http)


def push_blob(base: str, data_or_path: bytes | Path, digest: str, size: int) -> None:
    """Upload one blob (monolithic POST then PUT) unless the registry already holds it."""
    try:
        with _request("HEAD", f"{base}/blobs/{digest}"):  # type: ignore[attr-defined]
            return
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
    with _request("POST", f"{base}/blobs/uploads/") as started:  # type: ignore[attr-defined]
        location = started.headers["Location"]
    if location.startswith("/"):
        location = base.split("/v2/", 1)[0] + location
    separator = "&" if "?" in location else "?"
    url = f"{location}{separator}digest={urllib.parse.quote(digest)}"
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    if isinstance(data_or_path, Path):
        with data_or_path.open("rb") as body, _request("PUT", url, data=body, headers=headers):
            pass
    else:
        with _request("PUT", url, data=data_or_path, headers=headers):
            pass


def push(rootfs: Path, reference: str, *, epoch: int | None = None) -> BuiltImage:
    """Normalise `rootfs`, pack it reproducibly and push layer, config and manifest to `reference`."""
    epoch = suite_epoch(rootfs) if epoch is None else epoch
    packages = package_list(rootfs)
    packages_sha256 = hashlib.sha256(packages.encode()).hexdigest()
    normalise_rootfs(rootfs, epoch)
    registry, repository, tag = _registry_parts(reference)
    base = f"http://{registry}/v2/{repository}"
    with tempfile.TemporaryDirectory(prefix="bundler-base-image-") as tmp:
        layer = Path(tmp) / "layer.tar.gz"
        diff_id, layer_digest, layer_size = write_layer(rootfs, layer, epoch)
        config = image_config(diff_id, epoch, packages_sha256)
        push_blob(base, layer, layer_digest, layer_size)
        push_blob(base, config, _digest(config), len(config))
    manifest = manifest_bytes(config, layer_digest, layer_size)
    with _request("PUT", f"{base}/manifests/{tag}", data=manifest, headers={"Content-Type": MANIFEST_TYPE}):  # type: ignore[attr-defined]
        pass
    return BuiltImage(_digest(manifest), _digest(config), layer_digest, diff_id, layer_size, packages_sha256, epoch)


def built_here(reference: str) -> str | None:
    """The manifest digest the registry holds for `reference` when this builder made it, else None."""
    registry, repository, tag = _registry_parts(reference)
    base = f"http://{registry}/v2/{repository}"
    try:
        with _request("GET", f"{base}/manifests/{tag}", headers={"Accept": MANIFEST_TYPE}) as response:  # type: ignore[attr-defined]
            body = response.read()
        manifest = json.loads(body)
        with _request("GET", f"{base}/blobs/{manifest['config']['digest']}") as response:  # type: ignore[attr-defined]
            config = json.loads(response.read())
    except (OSError, ValueError, KeyError):
        return None
    labels = (config.get("config") or {}).get("Labels") or {}
    return _digest(body) if labels.get(LABEL_BUILDER) == BUILDER else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bundler.recipe.base_image", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="normalise a debootstrapped rootfs and push it as an image")
    build.add_argument("rootfs", type=Path, help="a debootstrapped root filesystem (changed in place)")
    build.add_argument("reference", help="registry/repository:tag to push to (a local, plain-HTTP registry)")
    build.add_argument("--epoch", type=int, help="SOURCE_DATE_EPOCH (default: the suite's Release date)")
    check = commands.add_parser("check", help="exit 0 and print the digest when this builder made the tag's image")
    check.add_argument("reference")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            digest = built_here(args.reference)
            if digest:
                print(digest)
            return 0 if digest else 1
        built = push(args.rootfs, args.reference, epoch=args.epoch)
    except BundlerError as exc:
        print(f"base-image: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"  {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the registry refused an upload, or the disk is full
        print(f"base-image: pushing to {args.reference} failed: {exc}", file=sys.stderr)
        print("  check that the registry answers (curl http://127.0.0.1:5000/v2/) and has disk space", file=sys.stderr)
        return 2
    print(
        f"base-image: pushed {args.reference}@{built.digest} (layer {built.layer_digest[:19]}, "
        f"{built.layer_size} bytes; packages {built.packages_sha256[:12]}; epoch {built.epoch})",
        file=sys.stderr,
    )
    print(built.digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
