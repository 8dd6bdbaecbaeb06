"""`bundler build`: lock check, source, split, model, image, pack, run, card, push.

The one module that knows the whole flow.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bundler import ui
from bundler.bundle.atomic import atomic_dir
from bundler.bundle.bag import RECIPE, VENDOR, payload_hashes, remove_stale_partials, seal_bundle, write_tags
from bundler.bundle.hashing import canonical_json, sha256_file
from bundler.bundle.scrub import refuse_secrets, secrets_allowed_in
from bundler.errors import CheckFailed, InputError, OutputExistsError, OutputLockedError, OutputPathError
from bundler.paths import runtime_source
from bundler.publish.push import push_run
from bundler.recipe import images, lock, source, splits, validate
from bundler.recipe.config import BundleConfig, dump_resolved
from bundler.recipe.configfile import load_config
from bundler.recipe.datasource import DatasetFiles, dataset_dir, dataset_record, find_dataset_files
from bundler.recipe.dockerfile import render_dockerfile
from bundler.recipe.models import resolve_model
from bundler.recipe.pylock import PYLOCK, is_current, pylock_path
from bundler.recipe.validate import InputReport, check_inputs
from bundler.recipe.wheelhouse import download_wheelhouse
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
    """The directory the dataset files live in (the runtime's BUNDLER_DATA_DIR); links are resolved in datasource."""

    return dataset_dir(config, project)


def check_out(out: Path) -> None:
    """Refuse an --out that holds something, or that cannot be a directory because a parent is a file."""
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise OutputExistsError(out)
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(out, parent)
            break


@contextlib.contextmanager
def claim_output(out: Path) -> Iterator[None]:
    """Hold `.<name>.lock` beside --out for the whole build: a second build into the same --out stops at once.

    The lock is flock(2) on the file, so a build killed by SIGKILL releases it; the file names its holder.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.parent / f".{out.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 512).decode("utf-8", "replace").strip()
            os.close(fd)
            raise OutputLockedError(out, holder) from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the build before us removed the file between our open and flock: take the new one
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    os.ftruncate(fd, 0)
    os.write(fd, f"bundler build, pid {os.getpid()} on {platform.node()}, started {started}\n".encode())
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def pinned_image(project: Path, env) -> dict:
    """The image pin `bundler lock` wrote beside the lock; without one, resolve it now (registry, then catalog)."""
    import json

    path = project / "image.lock.json"
    if not path.is_file():
        return images.image_lock_record(env, offline=False)
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("name") != env.image:
        raise CheckFailed(
            f"{path} pins image {record.get('name')!r} but bundle.toml asks for {env.image!r}",
        )
    return record


@dataclass(frozen=True)
class RecipeInputs:
    """What writing the recipe found: where the model and data are for the run, and the code's origin."""

    model_dir: Path
    dataset: DatasetFiles
    origin: dict[str, str]


def write_recipe(
    config: BundleConfig,
    project: Path,
    recipe: Path,
    *,
    allow_dirty: bool,
    runner: str,
    checked: InputReport | None = None,
) -> RecipeInputs:
    """Write every recipe file into `recipe`; return where the run's model and dataset are."""

    env = config.environment
    lock_path = project / env.lock
    ui.stage(f"checking {env.lock} against {env.requirements}")
    lock.check_lock(project, env)

    ui.stage("recording the code commit")
    recipe.mkdir(parents=True)
    record, _, patch = source.describe_source(project, allow_dirty, archive_to=recipe / "code.tar")
    if record.dirty:
        ui.warn(f"dirty tree allowed: {len(record.dirty_files)} changed file(s) recorded as code.patch")
    if patch is not None:
        (recipe / "code.patch").write_bytes(patch)
    refuse_secrets(recipe, label=RECIPE)  # every committed file, streamed: before any model or split work

    lock_sha = sha256_file(lock_path)
    ui.stage(f"preparing the base model {config.model.id}")
    model_dir, model_record = resolve_model(config, project, lock_path, lock_sha, use_host=runner == "host")
    if checked is not None and not (checked.model_checked and checked.responses_checked):
        validate.check_with_model(config, project, model_dir, checked)  # what waited for the model's files

    ui.stage("splitting the dataset (seeded hash assignment, dedupe, leakage check)")
    manifest = splits.make_split_manifest(config, project)
    found = find_dataset_files(config, project)

    ui.stage("pinning the base image and rendering the Dockerfile")
    image_record = pinned_image(project, env)

    if found.hub_id is None:  # the recipe records the data path as dataset.json does: never a host path
        config = config.model_copy(update={"data": config.data.model_copy(update={"path": found.source})})
    (recipe / "config.toml").write_text(dump_resolved(config), encoding="utf-8")
    shutil.copyfile(project / env.requirements, recipe / "requirements.in")
    shutil.copyfile(lock_path, recipe / "requirements.lock")

    if is_current(lock_path):  # the PEP 751 twin `bundler lock` writes (issue 21), covered by the ID
        shutil.copyfile(pylock_path(lock_path), recipe / PYLOCK)
    else:
        ui.warn(f"no current {PYLOCK} beside {env.lock}; run `bundler lock` to write it into the next bundle")
    (recipe / "image.lock.json").write_text(canonical_json(image_record), encoding="utf-8")
    (recipe / "Dockerfile").write_text(render_dockerfile(image_record, lock_sha, None), encoding="utf-8")
    (recipe / "source.json").write_text(canonical_json(record.as_dict()), encoding="utf-8")
    splits.write_manifest(manifest, recipe / "splits.json")
    (recipe / "model.json").write_text(canonical_json(model_record), encoding="utf-8")
    (recipe / "dataset.json").write_text(canonical_json(dataset_record(found)), encoding="utf-8")
    shutil.copytree(runtime_source(), recipe / "runtime", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return RecipeInputs(model_dir, found, source.origin_info(record))


def vendor_dataset(bundle: Path, found: DatasetFiles) -> Path:
    """Copy the dataset files the recipe names into data/vendor/dataset/ (outside the ID, checked by hash).

    Each file is copied from where its link (if any) resolved when the recipe was written.
    """
    target = bundle / VENDOR / "dataset"
    target.mkdir(parents=True, exist_ok=True)
    for name, path in sorted(found.files.items()):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / name)
    return target


def vendor_wheels(bundle: Path) -> Path:
    """Store the lock's wheels (checked against its hashes) in data/vendor/wheels/: a rebuild needs no index."""

    ui.stage("vendoring the locked wheels into data/vendor/wheels/")
    folder = download_wheelhouse(bundle / RECIPE / "requirements.lock", bundle / VENDOR / "wheels")
    for wheel in folder.iterdir():
        if wheel.stat().st_nlink > 1:  # a hard link into the wheel cache: own a copy, so edits stay in the bundle
            shutil.copyfile(wheel, wheel.with_name(wheel.name + ".copy"))
            os.replace(wheel.with_name(wheel.name + ".copy"), wheel)
    return folder


def _dataset_members(config: BundleConfig, project: Path) -> list[str]:
    """The dataset's files as code.tar names them (paths inside the project), for --allow-secrets-in-data."""

    found = find_dataset_files(config, project)
    members = []
    for name in found.files:
        try:
            members.append((found.data_dir / name).relative_to(project).as_posix())
        except ValueError:
            continue  # outside the project: not in code.tar
    return members


def check_build(
    project: Path, out: Path, *, vendor_data: bool = True, allow_secrets_in_data: bool = False
) -> tuple[BundleConfig, InputReport]:
    """Every check that needs no work: the config, --out, the data against the config, the model's fit.

    Raises the first kind of problem found (each listing all of its kind); writes nothing.
    """

    config = load_config(project).resolved()
    check_out(out)
    report = check_inputs(config, project, scan_data=vendor_data, allow_secrets_in_data=allow_secrets_in_data)
    return config, report


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
    allow_secrets_in_data: bool = False,
) -> BuildResult:
    """Build a bundle from the project at `project` into `out` (atomically) and, unless run=False, run it.

    Order: --out is checked and claimed, every input is validated, and only then is anything split,
    installed or trained. Nothing is left under `out` unless the whole build succeeds.
    """
    project = project.resolve()
    out = out.absolute()
    if push and not run:
        raise InputError("--push needs a run to publish", "drop --no-run, or push later with `bundler push`")
    load_config(project)  # a broken bundle.toml is named before --out is touched
    check_out(out)

    with claim_output(out):
        config, report = check_build(project, out, vendor_data=vendor_data, allow_secrets_in_data=allow_secrets_in_data)
        for warning in report.warnings:
            ui.warn(warning)
        for finding in report.data_secrets[:20]:
            ui.warn(f"allowed by --allow-secrets-in-data, vendored as is: {finding}")
        remove_stale_partials(out)  # what builds killed by SIGKILL left beside --out (never a running build's)
        allowed = _dataset_members(config, project) if allow_secrets_in_data else []
        with secrets_allowed_in(allowed), atomic_dir(out) as work:
            inputs = write_recipe(
                config, project, work / RECIPE, allow_dirty=allow_dirty, runner=runner, checked=report
            )
            data_dir = inputs.dataset.data_dir
            if vendor_data:
                data_dir = vendor_dataset(work, inputs.dataset)
            if vendor:
                vendor_wheels(work)
            bundle_id = seal_bundle(work)
            if inputs.origin:  # where the code came from: a tag file, outside the ID
                write_tags(work, payload_hashes(work), inputs.origin)
            ui.stage(f"bundle {bundle_id[:12]} sealed")
            run_id = None
            if run:
                tracking = config.tracking.model_dump() if config.tracking.backend != "none" else None
                run_id = run_bundle(
                    work, runner=runner, model_dir=inputs.model_dir, data_dir=data_dir, gpus=gpus, tracking=tracking
                )
    publish = None
    if push and run_id:
        ui.stage(f"pushing the adapter and card to {push}")
        publish = push_run(out, push, run_id=run_id, private=config.publish.private)
    return BuildResult(out, bundle_id, run_id, publish)
