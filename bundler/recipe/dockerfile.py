"""Render templates/Dockerfile.j2 from the image lock and lock sha256; lay out the build context."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from bundler.errors import InputError
from bundler.paths import render_template
from bundler.runtime.contract import DETERMINISM_ENV

LABEL_BUNDLE_ID = "org.bundler.bundle-id"
LABEL_LOCK_SHA256 = "org.bundler.lock-sha256"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def render_dockerfile(image_lock: dict, lock_sha256: str, bundle_id: str | None = None) -> str:
    """Return the Dockerfile text; byte-identical for the same inputs.

    The bundle ID is the hash of the recipe, which holds this Dockerfile, so it cannot be rendered
    into it: pass it to the build as a label (`build_labels`). `bundle_id` must stay None.
    """
    if bundle_id is not None:
        raise TypeError("the bundle ID depends on the Dockerfile; add it at build time with build_labels()")
    digest = str(image_lock.get("digest") or "")
    if not _DIGEST.match(digest):
        raise InputError(
            f"image.lock.json: digest {digest!r} is not sha256:<64 hex>",
            "run `bundler lock` to pin the base image",
        )
    if not _SHA256.match(lock_sha256):
        raise InputError(f"lock sha256 {lock_sha256!r} is not 64 hex digits")
    reference = str(image_lock["reference"]).split("@", 1)[0]
    return render_template(
        "Dockerfile.j2",
        reference=reference,
        digest=digest,
        python_bin=image_lock.get("python_bin", "python3"),
        lock_sha256=lock_sha256,
        env=sorted(DETERMINISM_ENV.items()),
    )


def build_labels(bundle_id: str, lock_sha256: str) -> dict[str, str]:
    """Labels passed to the build (docker-py `labels=`): the bundle ID and the lock's sha256."""
    return {LABEL_BUNDLE_ID: bundle_id, LABEL_LOCK_SHA256: lock_sha256}


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def build_context(recipe_dir: Path, wheelhouse: Path, dest: Path) -> Path:
    """Lay out the build context: Dockerfile, requirements.lock, wheels/ (verified), recipe/."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(recipe_dir / "Dockerfile", dest / "Dockerfile")
    shutil.copyfile(recipe_dir / "requirements.lock", dest / "requirements.lock")
    wheels = dest / "wheels"
    wheels.mkdir(exist_ok=True)
    for wheel in sorted(wheelhouse.glob("*.whl")):
        _link_or_copy(wheel, wheels / wheel.name)
    shutil.copytree(recipe_dir, dest / "recipe", dirs_exist_ok=True, copy_function=shutil.copyfile)
    return dest
