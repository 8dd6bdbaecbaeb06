"""The base image is a pure function of its files: two rootfs that differ only in build noise give one digest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from bundler.recipe import base_image
from bundler.recipe.images import resolve_digest

EPOCH = 1783764997  # the Date of bookworm's Release file on 2026-11-30


def make_rootfs(root: Path, *, host: str, mtime: int, reverse: bool) -> Path:
    """A tiny debootstrap-shaped tree; `host`, `mtime` and creation order stand for what differs by machine."""
    files = {
        "usr/bin/hello": "#!/bin/sh\necho hello\n",
        "usr/lib/python3.11/os.py": "# os\n",
        "etc/passwd": "root:x:0:0:root:/root:/bin/bash\n",
        "etc/shadow": f"root:*:{mtime // 86400}:0:99999:7:::\n",
        "etc/apt/sources.list": f"deb http://{host}/debian bookworm main\n",
        "etc/hostname": f"{host}\n",
        "etc/resolv.conf": f"nameserver 10.0.0.{len(host)}\n",
        "var/log/dpkg.log": f"{mtime} install hello\n",
        "var/cache/ldconfig/aux-cache": os.urandom(16).hex(),
        "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_Release": (
            "Origin: Debian\nDate: Sat, 11 Jul 2026 10:16:37 UTC\n"
        ),
        "var/lib/dpkg/status": (
            "Package: hello\nStatus: install ok installed\nVersion: 2.10-3\nArchitecture: amd64\n\n"
            "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n"
        ),
        "dev/null-standin": "",
    }
    for name in sorted(files, reverse=reverse):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[name])
        path.chmod(0o755 if name in ("usr/bin/hello", "etc/hostname") else 0o644)
    (root / "usr/bin/python3").symlink_to("python3.11")
    (root / "tmp").mkdir()
    (root / "tmp/left-over").write_text("x")
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            os.utime(os.path.join(folder, name), (mtime, mtime), follow_symlinks=False)
    return root


def packed(root: Path, tmp: Path) -> tuple[str, str, int]:
    base_image.normalise_rootfs(root, EPOCH)
    return base_image.write_layer(root, tmp / f"{root.name}.tar.gz", EPOCH)


def test_two_machines_rootfs_give_the_same_layer_bytes(tmp_path: Path) -> None:
    one = make_rootfs(tmp_path / "one", host="mirror-a.example", mtime=1_700_000_000, reverse=False)
    two = make_rootfs(tmp_path / "two", host="deb.debian.example.org", mtime=1_800_000_000, reverse=True)
    assert base_image.suite_epoch(one) == EPOCH
    assert packed(one, tmp_path) == packed(two, tmp_path)
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()
    assert (one / "etc/hostname").read_text() == "" and not (one / "var/log/dpkg.log").exists()
    assert (one / "etc/shadow").read_text() == f"root:*:{EPOCH // 86400}:0:99999:7:::\n"
    assert not any((one / "tmp").iterdir()) and not any((one / "var/lib/apt/lists").iterdir())


def test_a_changed_file_changes_the_layer(tmp_path: Path) -> None:
    one = make_rootfs(tmp_path / "one", host="h", mtime=1_700_000_000, reverse=False)
    two = make_rootfs(tmp_path / "two", host="h", mtime=1_700_000_000, reverse=False)
    (two / "usr/lib/python3.11/os.py").write_text("# os, patched\n")
    assert packed(one, tmp_path)[0] != packed(two, tmp_path)[0]


def test_config_carries_the_epoch_and_packages_never_today(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "r", host="h", mtime=1_700_000_000, reverse=False)
    assert base_image.package_list(root) == "hello 2.10-3 amd64\n"
    config = json.loads(base_image.image_config("sha256:" + "a" * 64, EPOCH, "b" * 64))
    assert config["created"] == "2026-07-11T10:16:37Z" == config["history"][0]["created"]
    assert config["config"]["Labels"][base_image.LABEL_BUILDER] == base_image.BUILDER
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]}
    first = base_image.manifest_bytes(base_image.image_config("sha256:" + "a" * 64, EPOCH, "b" * 64), "sha256:c", 1)
    later = base_image.manifest_bytes(base_image.image_config("sha256:" + "a" * 64, EPOCH + 1, "b" * 64), "sha256:c", 1)
    assert first != later


def test_a_rootfs_without_a_release_date_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "bare").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "bundler.recipe.base_image", "build", str(tmp_path / "bare"), "127.0.0.1:1/x:y"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"},
    )
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and "no Release file with a Date" in lines[0] and "SOURCE_DATE_EPOCH" in lines[1]


@pytest.mark.docker
def test_pushed_image_has_the_computed_digest_and_pulls_with_the_fixed_created_time(
    docker_client: Any, registry: str, tmp_path: Path
) -> None:
    reference = f"{registry}/bundler/test-base-image:{uuid.uuid4().hex[:12]}"
    root = make_rootfs(tmp_path / "r", host="h", mtime=1_700_000_000, reverse=False)
    built = base_image.push(root, reference)
    again = base_image.push(make_rootfs(tmp_path / "s", host="other", mtime=1_900_000_000, reverse=True), reference)
    try:
        assert built.digest == again.digest == resolve_digest(reference)["manifest_digest"]
        assert base_image.built_here(reference) == built.digest
        image = docker_client.images.pull(reference.rsplit(":", 1)[0] + "@" + built.digest)
        assert image.attrs["Created"].startswith("2026-07-11T10:16:37")
        assert image.labels[base_image.LABEL_PACKAGES] == built.packages_sha256
    finally:
        repository = reference.split("/", 1)[1].rsplit(":", 1)[0]
        request = urllib.request.Request(f"http://{registry}/v2/{repository}/manifests/{built.digest}", method="DELETE")
        urllib.request.urlopen(request, timeout=10).close()
        docker_client.images.remove(reference.rsplit(":", 1)[0] + "@" + built.digest, force=True)
