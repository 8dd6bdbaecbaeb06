"""`bundler build`: lock check, source, split, model, image, pack, run, card, push.

The one module that knows the whole flow.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bundler import ui
from bundler.bundle.atomic import atomic_dir
from bundler.bundle.bag import RECIPE, VENDOR, seal_bundle
from bundler.bundle.hashing import canonical_json, sha256_file
from bundler.errors import InputError, OutputExistsError
from bundler.recipe.config import BundleConfig, dump_resolved, load_config
from bundler.runners.execute import run_bundle


@dataclass(frozen=True)
class BuildResult:
    bundle: Path
    bundle_id: str
    run_id: str | None
    publish: dict | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "schema": "bundler.build/1",
            "bundle": str(self.bundle),
            "bundle_id": self.bundle_id,
            "run_id": self.run_id,
            "publish": self.publish,
        }


def data_dir_of(config: BundleConfig, project: Path) -> Path:
    """The directory the dataset files live in (the runtime's BUNDLER_DATA_DIR)."""
    from bundler.recipe.config import HUB_DATASET_PREFIXES

    if config.data.path.startswith(HUB_DATASET_PREFIXES):
        from bundler.recipe.datasource import dataset_dir

        return dataset_dir(config, project)  # the checked snapshot in the Hub cache
    path = (project / config.data.path).resolve()
    return path if path.is_dir() else path.parent


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(out)


def pinned_image(project: Path, env) -> dict:
    """The image pin `bundler lock` wrote beside the lock; without one, resolve it now (registry, then catalog)."""
    import json

    from bundler.errors import CheckFailed
    from bundler.recipe import images

    path = project / "image.lock.json"
    if not path.is_file():
        return images.image_lock_record(env, offline=False)
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("name") != env.image:
        raise CheckFailed(
            f"{path} pins image {record.get('name')!r} but bundle.toml asks for {env.image!r}",
        )
    return record


def write_recipe(
    config: BundleConfig, project: Path, recipe: Path, *, allow_dirty: bool, runner: str
) -> tuple[Path, Path]:
    """Write every recipe file into `recipe`; return the model and dataset directories for the run."""
    from bundler.paths import runtime_source
    from bundler.recipe import lock, source, splits
    from bundler.recipe.datasource import describe_dataset
    from bundler.recipe.dockerfile import render_dockerfile

    env = config.environment
    lock_path = project / env.lock
    ui.stage(f"checking {env.lock} against {env.requirements}")
    lock.check_lock(project, env)

    ui.stage("recording the code commit")
    record, archive, patch = source.describe_source(project, allow_dirty)
    if record.dirty:
        ui.warn(f"dirty tree allowed: {len(record.dirty_files)} changed file(s) recorded as code.patch")

    ui.stage("splitting the dataset (seeded hash assignment, dedupe, leakage check)")
    manifest = splits.make_split_manifest(config, project)
    dataset = describe_dataset(config, project)

    lock_sha = sha256_file(lock_path)
    ui.stage(f"preparing the base model {config.model.id}")
    from bundler.recipe.models import resolve_model

    model_dir, model_record = resolve_model(config, project, lock_path, lock_sha, use_host=runner == "host")

    ui.stage("pinning the base image and rendering the Dockerfile")
    image_record = pinned_image(project, env)

    recipe.mkdir(parents=True)
    (recipe / "config.toml").write_text(dump_resolved(config), encoding="utf-8")
    shutil.copyfile(project / env.requirements, recipe / "requirements.in")
    shutil.copyfile(lock_path, recipe / "requirements.lock")
    (recipe / "image.lock.json").write_text(canonical_json(image_record), encoding="utf-8")
    (recipe / "Dockerfile").write_text(render_dockerfile(image_record, lock_sha, None), encoding="utf-8")
    (recipe / "source.json").write_text(canonical_json(record.as_dict()), encoding="utf-8")
    (recipe / "code.tar").write_bytes(archive)
    if patch is not None:
        (recipe / "code.patch").write_bytes(patch)
    splits.write_manifest(manifest, recipe / "splits.json")
    (recipe / "model.json").write_text(canonical_json(model_record), encoding="utf-8")
    (recipe / "dataset.json").write_text(canonical_json(dataset), encoding="utf-8")
    shutil.copytree(runtime_source(), recipe / "runtime", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return model_dir, data_dir_of(config, project)


def vendor_dataset(bundle: Path, data_dir: Path) -> Path:
    """Copy the dataset files the recipe names into data/vendor/dataset/ (outside the ID, checked by hash)."""
    import json

    target = bundle / VENDOR / "dataset"
    target.mkdir(parents=True, exist_ok=True)
    for name in json.loads((bundle / RECIPE / "dataset.json").read_text())["files"]:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / name, target / name)
    return target


def vendor_wheels(bundle: Path) -> Path:
    """Store the lock's wheels (checked against its hashes) in data/vendor/wheels/: a rebuild needs no index."""
    from bundler.recipe.wheelhouse import download_wheelhouse

    ui.stage("vendoring the locked wheels into data/vendor/wheels/")
    folder = download_wheelhouse(bundle / RECIPE / "requirements.lock", bundle / VENDOR / "wheels")
    for wheel in folder.iterdir():
        if wheel.stat().st_nlink > 1:  # a hard link into the wheel cache: own a copy, so edits stay in the bundle
            shutil.copyfile(wheel, wheel.with_name(wheel.name + ".copy"))
            os.replace(wheel.with_name(wheel.name + ".copy"), wheel)
    return folder


def build(
    project: Path,
    out: Path,
    *,
    allow_dirty: bool = False,
    runner: str = "venv",
    run: bool = True,
    push: str | None = None,
    vendor_data: bool = True,
    vendor: bool = False,
    gpus: str | None = None,
) -> BuildResult:
    """Build a bundle from the project at `project` into `out` (atomically) and, unless run=False, run it."""
    project = project.resolve()
    out = out.resolve()
    config = load_config(project).resolved()
    _check_out(out)
    if push and not run:
        raise InputError("--push needs a run to publish", "drop --no-run, or push later with `bundler push`")
    from bundler.bundle.bag import remove_stale_partials

    remove_stale_partials(out)  # what builds killed by SIGKILL left beside --out (never a running build's)
    with atomic_dir(out) as work:
        model_dir, data_dir = write_recipe(config, project, work / RECIPE, allow_dirty=allow_dirty, runner=runner)
        if vendor_data:
            data_dir = vendor_dataset(work, data_dir)
        if vendor:
            vendor_wheels(work)
        bundle_id = seal_bundle(work)
        ui.stage(f"bundle {bundle_id[:12]} sealed")
        run_id = None
        if run:
            tracking = config.tracking.model_dump() if config.tracking.backend != "none" else None
            run_id = run_bundle(
                work, runner=runner, model_dir=model_dir, data_dir=data_dir, gpus=gpus, tracking=tracking
            )
    publish = None
    if push and run_id:
        from bundler.publish.push import push_run

        ui.stage(f"pushing the adapter and card to {push}")
        publish = push_run(out, push, run_id=run_id, private=config.publish.private)
    return BuildResult(out, bundle_id, run_id, publish)
