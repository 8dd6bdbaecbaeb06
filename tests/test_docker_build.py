"""The rendered Dockerfile against the real engine and registry (.ci/setup-docker.sh starts them)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bundler.bundle.lockfile import lock_sha256
from bundler.errors import UnknownImageError
from bundler.recipe.config import EnvironmentConfig
from bundler.recipe.dockerfile import (
    LABEL_BUNDLE_ID,
    LABEL_LOCK_SHA256,
    build_context,
    build_labels,
    render_dockerfile,
)
from bundler.recipe.images import image_lock_record, resolve_digest
from bundler.recipe.lock import write_lock
from bundler.recipe.wheelhouse import download_wheelhouse
from tests.fixtures.docker_env import BASE_IMAGE, BASE_IMAGE_NAME, RUNTIME_STUB

pytestmark = pytest.mark.docker
ENV = EnvironmentConfig(image=BASE_IMAGE_NAME)


def make_recipe(root: Path, image_lock: dict[str, Any], runtime_text: str) -> Path:
    recipe = root / "recipe"
    (recipe / "runtime").mkdir(parents=True, exist_ok=True)
    (recipe / "runtime" / "__main__.py").write_text(runtime_text)
    (recipe / "image.lock.json").write_text(json.dumps(image_lock, sort_keys=True))
    (recipe / "Dockerfile").write_text(render_dockerfile(image_lock, lock_sha256(recipe / "requirements.lock")))
    return recipe


def build(client: Any, context: Path, bundle_id: str, lock_sha: str) -> tuple[Any, list[str]]:
    image, logs = client.images.build(
        path=str(context), labels=build_labels(bundle_id, lock_sha), rm=True, forcerm=True
    )
    return image, [entry["stream"] for entry in logs if "stream" in entry]


@pytest.fixture(scope="module")
def built(docker_client: Any, registry: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Lock tiny wheels, pin the base image, delete its local copy, build; then rebuild after a code change."""
    import os

    from tests.fixtures.docker_env import make_runtime_wheels

    root = tmp_path_factory.mktemp("image")
    wheels = make_runtime_wheels(root / "wheels")
    saved = {k: os.environ.get(k) for k in ("PIP_CONFIG_FILE", "PIP_NO_INDEX", "PIP_FIND_LINKS", "BUNDLER_CACHE")}
    os.environ.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(wheels),
        BUNDLER_CACHE=str(root / "cache"),
    )
    try:
        project = root / "project"
        project.mkdir()
        (project / "requirements.in").write_text("torch==2.13.0\ntransformers\npeft\nsafetensors\nnumpy\n")
        lock = write_lock(project, ENV).lock
        (root / "recipe").mkdir()
        shutil.copy(lock, root / "recipe" / "requirements.lock")
        wheelhouse = download_wheelhouse(root / "recipe" / "requirements.lock", root / "wheelhouse")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    image_lock = image_lock_record(ENV, offline=False)
    digest = image_lock["digest"]
    for tag in (BASE_IMAGE, f"{BASE_IMAGE.rsplit(':', 1)[0]}@{digest}"):
        try:
            docker_client.images.remove(tag, force=True)
        except Exception:  # not present locally: nothing to delete
            pass
    recipe = make_recipe(root, image_lock, RUNTIME_STUB)
    lock_sha = lock_sha256(recipe / "requirements.lock")
    first, first_log = build(docker_client, build_context(recipe, wheelhouse, root / "ctx1"), "1" * 64, lock_sha)
    shutil.copytree(root / "recipe", root / "v2" / "recipe")
    recipe2 = make_recipe(root / "v2", image_lock, RUNTIME_STUB + "print('code change')\n")
    second, second_log = build(docker_client, build_context(recipe2, wheelhouse, root / "ctx2"), "2" * 64, lock_sha)
    yield {
        "image_lock": image_lock,
        "first": first,
        "first_log": first_log,
        "second": second,
        "second_log": second_log,
        "lock_sha": lock_sha,
        "client": docker_client,
    }
    for image in (second, first):
        try:
            docker_client.images.remove(image.id, force=True)
        except Exception:  # shared layers may already be gone
            pass


def test_tag_resolves_to_the_digest_the_engine_pulled(built: dict[str, Any]) -> None:
    pulled = built["client"].images.get(BASE_IMAGE.rsplit(":", 1)[0] + "@" + built["image_lock"]["digest"])
    assert any(d.endswith(built["image_lock"]["digest"]) for d in pulled.attrs["RepoDigests"])
    assert built["image_lock"]["digest_source"] == "registry"
    assert built["image_lock"]["digest"] != pulled.id  # never the local image ID


def test_build_pulls_the_base_by_digest(built: dict[str, Any]) -> None:
    first_from = next(line for line in built["first_log"] if line.startswith("Step 1/"))
    assert f"@{built['image_lock']['digest']}" in first_from


def test_image_carries_bundle_id_and_lock_labels_and_runs_without_network(
    built: dict[str, Any],
) -> None:
    image = built["first"]
    assert image.labels[LABEL_BUNDLE_ID] == "1" * 64
    assert image.labels[LABEL_LOCK_SHA256] == built["lock_sha"]
    output = built["client"].containers.run(image.id, network_mode="none", remove=True).decode()
    assert "RUNTIME_OK 2.13.0+cu128 1000 0 ['/bundle/recipe', '/out']" in output


def test_code_only_change_reuses_the_dependency_layers(built: dict[str, Any]) -> None:
    log = "".join(built["second_log"])
    install_step = log.split("pip install", 1)[1].split("Step", 1)[0]
    assert "Using cache" in install_step
    copy_venv = log.split("COPY --from=deps", 1)[1].split("Step", 1)[0]
    assert "Using cache" in copy_venv
    copy_recipe = log.split("COPY recipe/", 1)[1].split("Step", 1)[0]
    assert "Using cache" not in copy_recipe
    output = built["client"].containers.run(built["second"].id, network_mode="none", remove=True).decode()
    assert "code change" in output


def test_registry_resolution_of_an_unknown_tag_is_bad_input(registry: str) -> None:
    with pytest.raises(UnknownImageError) as caught:
        resolve_digest(f"{registry}/bundler/debian-python:no-such-tag")
    assert caught.value.exit_code == 2
