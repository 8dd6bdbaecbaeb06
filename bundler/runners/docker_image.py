"""The docker runner's image: engine and driver checks, the pinned base image, the offline build.

The image is built once per bundle ID from the bundle's verified wheels with no network; its label
names the bundle ID, so a tag pointing at another bundle's image is never reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bundler import ui
from bundler.bundle.bag import RECIPE, VENDOR
from bundler.bundle.hashing import sha256_file
from bundler.errors import (
    BaseImageUnavailableError,
    DriverTooOldError,
    EngineUnavailableError,
    EnvironmentSetupError,
    InputError,
)
from bundler.paths import cache_dir
from bundler.recipe.dockerfile import LABEL_BUNDLE_ID, build_context, build_labels

IMAGE_REPOSITORY = "bundler/bundle"
VENDOR_WHEELS = f"{VENDOR}/wheels"


# --- checks before anything is built -------------------------------------------------------------


def connect() -> Any:
    """A docker-py client whose engine answered a ping; EngineUnavailableError otherwise."""
    import docker

    try:
        client = docker.from_env(version="auto", timeout=600)
        client.ping()
    except Exception as exc:  # docker-py raises DockerException, requests' errors or OSError for "no engine"
        raise EngineUnavailableError(
            f"no Docker engine answers ({os.environ.get('DOCKER_HOST', 'unix:///var/run/docker.sock')}): {exc}",
            "start the engine (`dockerd`, or .ci/setup-docker.sh), or use --runner venv",
        ) from None
    return client


def gpu_device_requests(gpus: str | None) -> list[Any]:
    """The DeviceRequests docker-py passes for `--gpus`: none, `all` (count -1), or a count N."""
    from docker.types import DeviceRequest

    if gpus is None or gpus.strip() in ("", "0", "none"):
        return []
    value = gpus.strip()
    if value == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if value.isdigit():
        return [DeviceRequest(count=int(value), capabilities=[["gpu"]])]
    raise InputError(f"--gpus {gpus!r} is neither 'all' nor a number", "pass --gpus all or --gpus N")


def check_gpu_runtime(engine_info: dict[str, Any], gpus: str | None) -> None:
    """Refuse GPU requests the engine cannot honour: no NVIDIA runtime in `docker info` Runtimes."""
    if not gpu_device_requests(gpus):
        return
    runtimes = sorted((engine_info.get("Runtimes") or {}).keys())
    if not any("nvidia" in name for name in runtimes):
        raise EngineUnavailableError(
            f"--gpus {gpus} was asked for, but the Docker engine has no NVIDIA runtime "
            f"(runtimes: {', '.join(runtimes) or 'none'})",
            "install the NVIDIA Container Toolkit and run `nvidia-ctk runtime configure --runtime=docker`, "
            "then restart the engine; or run without --gpus",
        )


def host_driver_version() -> str | None:
    """The NVIDIA driver version nvidia-smi reports on this machine, or None when no driver is visible."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.split()
    return lines[0].strip() if done.returncode == 0 and lines else None


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def check_driver(image_lock: dict[str, Any], installed: str | None) -> None:
    """Refuse a driver older than the image's `min_driver`; nothing to check without a GPU or a CUDA image."""
    required = str(image_lock.get("min_driver") or "none")
    if installed is None or required in ("", "none") or not _version_tuple(required):
        return
    if _version_tuple(installed) < _version_tuple(required):
        raise DriverTooOldError(installed, required, str(image_lock.get("cuda")))


# --- the image -----------------------------------------------------------------------------------


def image_tag(bundle_id: str) -> str:
    return f"{IMAGE_REPOSITORY}:{bundle_id}"


def bundle_wheelhouse(bundle: Path) -> tuple[Path, str]:
    """The wheels to install: the bundle's vendored ones when it has them, else a download cached by lock sha."""
    # deferred: it loads pydantic, which callers that never reach this line should not pay for
    from bundler.recipe.wheelhouse import download_wheelhouse, verify_wheelhouse

    lock = bundle / RECIPE / "requirements.lock"
    vendored = bundle / VENDOR_WHEELS
    if vendored.is_dir():
        verify_wheelhouse(lock, vendored)
        return vendored, "vendored"
    target = cache_dir() / "wheelhouses" / sha256_file(lock)[:24]
    ui.stage("downloading the locked wheels for the image (checked against the lock's hashes)")
    return download_wheelhouse(lock, target), "downloaded"


def ensure_base_image(client: Any, image_lock: dict[str, Any]) -> str:
    """Make the pinned base image present locally (the engine's copy, else a pull by digest); say where from."""
    import docker

    reference = str(image_lock["reference"]).split("@", 1)[0]
    repository = reference.rsplit(":", 1)[0] if ":" in reference.rsplit("/", 1)[-1] else reference
    pinned = f"{repository}@{image_lock['digest']}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(pinned)
        return "local"
    ui.stage(f"pulling the base image {pinned}")
    try:
        client.api.pull(pinned)
    except docker.errors.APIError as exc:
        said = str(getattr(exc, "explanation", "") or exc)
        # deferred: it loads pydantic, which only this failure path needs
        from bundler.recipe.images import local_tag_digest

        holds = local_tag_digest(reference)
        raise BaseImageUnavailableError(reference, str(image_lock["digest"]), said, holds) from None
    try:
        client.images.get(pinned)
    except docker.errors.ImageNotFound:
        raise BaseImageUnavailableError(reference, str(image_lock["digest"]), "the pull returned no image") from None
    return "registry"


def build_image(client: Any, bundle: Path, bundle_id: str) -> tuple[Any, dict[str, str]]:
    """Return the bundle's image (built once per bundle ID; layers cached across bundles) and how it was made."""
    import docker

    tag = image_tag(bundle_id)
    with contextlib.suppress(docker.errors.ImageNotFound):
        image = client.images.get(tag)
        if image.labels.get(LABEL_BUNDLE_ID) == bundle_id:
            return image, {"image_build": "reused"}
    recipe = bundle / RECIPE
    image_lock = json.loads((recipe / "image.lock.json").read_text(encoding="utf-8"))
    base = ensure_base_image(client, image_lock)
    wheels, wheel_source = bundle_wheelhouse(bundle)
    lock_sha = sha256_file(recipe / "requirements.lock")
    ui.stage(f"building the image {tag[: len(IMAGE_REPOSITORY) + 13]} (offline; dependency layers cached)")
    with tempfile.TemporaryDirectory(prefix="bundler-context-") as tmp:
        context = build_context(recipe, wheels, Path(tmp) / "context")
        image_id = None
        tail: list[str] = []
        for entry in client.api.build(
            path=str(context),
            tag=tag,
            labels=build_labels(bundle_id, lock_sha),
            rm=True,
            forcerm=True,
            pull=False,
            network_mode="none",
            decode=True,
        ):
            if "error" in entry:
                raise EnvironmentSetupError(
                    "the image build failed: " + str(entry["error"]).strip() + "\n" + "".join(tail[-12:]),
                    "BUNDLER_DEBUG=1 shows the whole build log",
                )
            text = entry.get("stream", "")
            if text:
                tail = (tail + [text])[-40:]
                if os.environ.get("BUNDLER_DEBUG"):
                    ui.info(text.rstrip())
            image_id = (entry.get("aux") or {}).get("ID", image_id)
    if image_id is None:
        raise EnvironmentSetupError("the image build reported no image ID:\n" + "".join(tail[-12:]))
    return client.images.get(image_id), {"image_build": "built", "base_image_from": base, "wheels": wheel_source}
