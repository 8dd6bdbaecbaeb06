"""The docker runner: build the bundle's image offline from verified wheels, run it sealed off, collect the run.

Everything goes through the Engine API with docker-py (no `docker` CLI). The container gets: no network,
a read-only root filesystem, the model snapshot and dataset mounted read-only, one writable output
directory, a non-root user, and GPUs only through device requests. The recipe is baked into the image
(the Dockerfile's last layer), so it is read-only inside too and the image label names its bundle ID.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from bundler import ui
from bundler.bundle.bag import RECIPE, bundle_id_of
from bundler.errors import (
    InputError,
)
from bundler.recipe.dockerfile import LABEL_BUNDLE_ID
from bundler.runners.docker_image import (
    IMAGE_REPOSITORY,
    build_image,
    bundle_wheelhouse,
    check_driver,
    check_gpu_runtime,
    connect,
    gpu_device_requests,
    host_driver_version,
    image_tag,
)
from bundler.runners.launch import LineSplitter, RunRequest, RuntimeLog, discard, finish_run, runtime_env, staging_dir

__all__ = [
    "IMAGE_REPOSITORY",
    "build_image",
    "bundle_wheelhouse",
    "check_driver",
    "check_gpu_runtime",
    "connect",
    "container_process",
    "gpu_device_requests",
    "image_tag",
    "readable_mount",
    "run_docker",
    "run_kwargs",
]

# Where the image expects things (templates/Dockerfile.j2 sets the matching ENV and ENTRYPOINT).
RECIPE_IN_IMAGE = "/bundle/recipe"
OUT_IN_CONTAINER = "/out"
MODEL_MOUNT = "/mnt/model"
DATA_MOUNT = "/mnt/data"
IMAGE_USER = "1000:1000"
# Host-only variables: the image's ENV sets PATH and HOME for its own filesystem, and GPUs reach the
# container through device requests, which renumber them, so the host's CUDA_VISIBLE_DEVICES would lie.
_HOST_ONLY = ("PATH", "HOME", "CUDA_VISIBLE_DEVICES")


# --- the container -------------------------------------------------------------------------------


def container_user() -> str:
    """Never root: the image's user when bundler runs as root, else the caller's IDs (so outputs stay theirs)."""
    uid = os.getuid()
    return IMAGE_USER if uid == 0 else f"{uid}:{os.getgid()}"


def container_env(request: RunRequest, image_digest: str) -> dict[str, str]:
    """The runtime's environment inside the container: runtime_env with container paths, less host-only names."""
    inside = replace(request, model_dir=Path(MODEL_MOUNT), data_dir=Path(DATA_MOUNT))
    env = runtime_env("docker", inside, image_digest)
    for name in _HOST_ONLY:
        env.pop(name, None)
    env["PYTHONPATH"] = RECIPE_IN_IMAGE
    return env


def run_kwargs(
    request: RunRequest, staged: Path, image_lock: dict[str, Any], bundle_id: str, user: str | None = None
) -> dict[str, Any]:
    """Everything passed to `containers.create` besides the image: mounts, user, network, GPUs, env."""
    return {
        "environment": container_env(request, str(image_lock.get("digest") or "")),
        "user": user or container_user(),
        "network_mode": "none",
        "read_only": True,
        # HOME=/tmp in the image: libraries may write caches there; it vanishes with the container.
        "tmpfs": {"/tmp": "rw,exec,mode=1777"},
        "volumes": {
            str(request.model_dir.resolve()): {"bind": MODEL_MOUNT, "mode": "ro"},
            str(request.data_dir.resolve()): {"bind": DATA_MOUNT, "mode": "ro"},
            str(staged): {"bind": OUT_IN_CONTAINER, "mode": "rw"},
        },
        "device_requests": gpu_device_requests(request.gpus),
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
        # torch's DataLoader workers share tensors through /dev/shm; Docker's default is 64 MB.
        "shm_size": "1g",
        "labels": {LABEL_BUNDLE_ID: bundle_id, "org.bundler.role": "run"},
        "detach": True,
    }


def container_process(dockerfile: str, kwargs: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The command and environment the container's process starts with: the final stage's ENTRYPOINT and
    ENV from the rendered Dockerfile, overlaid with the run's `environment` (what the engine does)."""
    import shlex

    final = dockerfile.rsplit("\nFROM ", 1)[-1]
    logical = re.sub(r"\\\n\s*", " ", final)
    env: dict[str, str] = {}
    command: list[str] = []
    for line in logical.splitlines():
        keyword, _, rest = line.strip().partition(" ")
        if keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = value
        elif keyword == "ENTRYPOINT":
            command = json.loads(rest)
    env.update(kwargs.get("environment") or {})
    return command, env


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while a container runs, so both take the same cleanup path."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _is_readable_by(root: Path, uid: int, gid: int) -> bool:
    """True when the user uid:gid can read every file under `root` (and enter every folder) by mode bits."""
    import stat

    def allowed(path: str, want: int) -> bool:
        info = os.stat(path)
        if info.st_uid == uid:
            return bool(info.st_mode & (want << 6))
        if info.st_gid == gid:
            return bool(info.st_mode & (want << 3))
        return bool(info.st_mode & want)

    if not allowed(str(root), stat.S_IROTH | stat.S_IXOTH):
        return False
    for folder, dirs, files in os.walk(root):
        if any(not allowed(os.path.join(folder, d), stat.S_IROTH | stat.S_IXOTH) for d in dirs):
            return False
        if any(not allowed(os.path.join(folder, f), stat.S_IROTH) for f in files):
            return False
    return True


def readable_mount(source: Path, user: str, scratch: Path) -> Path:
    """`source` itself when the container user can read it; else a readable copy under `scratch`.

    Bundler's own atomic writes leave files 0600, and the container never runs as root, so a root-owned
    snapshot would be unreadable inside; the caller's files keep their modes (copied, never chmod-ed).
    """
    uid, gid = (int(part) for part in user.split(":"))
    source = source.resolve()
    if _is_readable_by(source, uid, gid):
        return source
    copy = scratch / source.name
    shutil.copytree(source, copy, symlinks=False)
    for folder, _dirs, files in os.walk(copy):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    return copy


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


def run_container(client: Any, image: Any, kwargs: dict[str, Any], staged: Path) -> None:
    """Run the image to completion, streaming its output; the container is removed whatever happens."""
    if os.getuid() == 0:
        uid, gid = (int(part) for part in str(kwargs["user"]).split(":"))
        _chown_tree(staged, uid, gid)
    container = None
    try:
        with sigterm_interrupts(), ui.StepProgress("training (docker)") as progress:
            log = RuntimeLog(progress)
            container = client.containers.create(image.id, **kwargs)
            container.start()
            lines = LineSplitter()
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                for line in lines.feed(chunk):
                    log.feed(line)
            for line in lines.flush():
                log.feed(line)
            code = int(container.wait().get("StatusCode", 1))
        log.finish(code)
    finally:
        if container is not None:
            with contextlib.suppress(Exception):  # already gone is fine; the engine may be shutting down
                container.remove(force=True)
        if os.getuid() == 0:
            _chown_tree(staged, 0, 0)


def run_docker(request: RunRequest) -> str:
    """Build the bundle's image, run the fine-tune in it, record the run; return the run ID."""
    bundle = request.bundle
    for what, path in (("model snapshot", request.model_dir), ("dataset directory", request.data_dir)):
        if not Path(path).is_dir():
            raise InputError(f"the {what} {path} does not exist", f"pass an existing directory for the {what}")
    recipe = bundle / RECIPE
    image_lock = json.loads((recipe / "image.lock.json").read_text(encoding="utf-8"))
    gpu_device_requests(request.gpus)  # a malformed --gpus is bad input before anything else
    staged = staging_dir(bundle)
    started = time.time()
    try:
        client = connect()
        info = client.info()
        check_gpu_runtime(info, request.gpus)
        check_driver(image_lock, host_driver_version())
        bundle_id = bundle_id_of(bundle)
        image, made = build_image(client, bundle, bundle_id)
        user = container_user()
        with tempfile.TemporaryDirectory(prefix=".bundler-mounts-", dir=bundle.parent) as scratch:
            mounted = replace(
                request,
                model_dir=readable_mount(request.model_dir, user, Path(scratch) / "model"),
                data_dir=readable_mount(request.data_dir, user, Path(scratch) / "data"),
            )
            kwargs = run_kwargs(mounted, staged, image_lock, bundle_id, user)
            run_container(client, image, kwargs, staged)
        details = {
            "environment": {
                "image_id": image.id,
                "image_tag": image_tag(bundle_id),
                "base_image": f"{str(image_lock['reference']).split('@', 1)[0]}@{image_lock['digest']}",
                "engine": {
                    "version": info.get("ServerVersion"),
                    "storage_driver": info.get("Driver"),
                    "runtimes": sorted((info.get("Runtimes") or {}).keys()),
                },
                "gpus": request.gpus,
                "user": kwargs["user"],
                "network": kwargs["network_mode"],
                "command": container_process((recipe / "Dockerfile").read_text(encoding="utf-8"), kwargs)[0],
                **made,
            }
        }
        return finish_run(request, staged, "docker", started, details)
    except BaseException:
        discard(staged)
        raise
