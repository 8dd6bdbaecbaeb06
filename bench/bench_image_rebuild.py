"""Benchmark the image rebuild after a code-only change (target: under 15 s).

Run as root after .ci/setup-docker.sh: python bench/bench_image_rebuild.py
Uses the quickstart requirements (real torch CPU wheel, ~240 MB of wheels) and the local
debian-python base image pinned by digest. Rows: a build with nocache=True (baseline), a
rebuild after changing only recipe code, and a rebuild with nothing changed. Each time covers
laying out the build context, sending it to the engine and building.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker  # noqa: E402

from bundler.bundle.lockfile import lock_sha256
from bundler.recipe.config import EnvironmentConfig  # noqa: E402
from bundler.recipe.dockerfile import build_context, build_labels, render_dockerfile  # noqa: E402
from bundler.recipe.images import image_lock_record  # noqa: E402
from bundler.recipe.lock import write_lock  # noqa: E402
from bundler.recipe.wheelhouse import download_wheelhouse  # noqa: E402

ENV = EnvironmentConfig(image="debian-python-3.11")


def build(client: docker.DockerClient, recipe: Path, house: Path, ctx: Path, *, nocache: bool) -> tuple[float, str]:
    started = time.perf_counter()
    build_context(recipe, house, ctx)
    image, logs = client.images.build(
        path=str(ctx),
        labels=build_labels("0" * 64, lock_sha256(recipe / "requirements.lock")),
        rm=True,
        forcerm=True,
        nocache=nocache,
    )
    cached = sum("Using cache" in entry.get("stream", "") for entry in logs)
    return time.perf_counter() - started, f"{cached} steps from cache"


def main() -> None:
    client = docker.from_env(version="auto", timeout=900)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project = root / "project"
        project.mkdir()
        (project / "requirements.in").write_text("torch==2.13.0\ntransformers\npeft\nsafetensors\nnumpy\n")
        recipe = root / "recipe"
        (recipe / "runtime").mkdir(parents=True)
        shutil.copy(write_lock(project, ENV).lock, recipe / "requirements.lock")
        house = download_wheelhouse(recipe / "requirements.lock", root / "house")
        image_lock = image_lock_record(ENV, offline=False)
        (recipe / "Dockerfile").write_text(render_dockerfile(image_lock, lock_sha256(recipe / "requirements.lock")))
        (recipe / "runtime" / "__main__.py").write_text("print('v1')\n")
        rows = [
            (
                "full build, nocache (baseline)",
                *build(client, recipe, house, root / "c1", nocache=True),
            )
        ]
        (recipe / "runtime" / "__main__.py").write_text("print('v2')\n")
        rows.append(
            (
                "rebuild after a code-only change",
                *build(client, recipe, house, root / "c2", nocache=False),
            )
        )
        rows.append(("rebuild, nothing changed", *build(client, recipe, house, root / "c3", nocache=False)))
    base = rows[0][1]
    print("| case | seconds | x full build | cache |")
    print("|---|---:|---:|---|")
    for name, seconds, note in rows:
        print(f"| {name} | {seconds:.2f} | {seconds / base:.3f} | {note} |")


if __name__ == "__main__":
    main()
