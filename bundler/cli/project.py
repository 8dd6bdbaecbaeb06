"""Commands that make a bundle: init, lock, split, build, run."""

from __future__ import annotations

from pathlib import Path

import click

from bundler.cli.options import RUNNER_CHOICE, emit, handles_errors, json_option


@click.command()
@click.argument("path", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--name", help="Project name (default: the directory name).")
@handles_errors
def init(path: Path, name: str | None) -> None:
    """Write a commented bundle.toml and requirements.in into PATH."""
    from bundler.recipe.scaffold import init_project

    written = init_project(path, name)
    for file in written:
        click.echo(str(file))


@click.command()
@click.argument("project", type=click.Path(path_type=Path), default=".")
@click.option("--check", is_flag=True, help="Only check the lock is fresh; exit 1 when requirements.in changed.")
@click.option("--offline", is_flag=True, help="No network: reuse cached locks and the catalog's image digest.")
@json_option
@handles_errors
def lock(project: Path, check: bool, offline: bool, as_json: bool) -> None:
    """Write requirements.lock (hashes, for the target image), image.lock.json (base image digest) and,
    for a Hub base model, model.lock.json (its commit and the sha256 of every file a load reads)."""
    from bundler.recipe import images, models
    from bundler.recipe import lock as locking
    from bundler.recipe.config import load_config

    config = load_config(project)
    env = config.environment
    project_dir = project if project.is_dir() else project.parent
    from_hub = models.pins_model(config)
    if check:
        status = locking.check_lock(project_dir, env)
        model_lock = models.read_model_lock(project_dir, config) if from_hub else None
        emit(
            {
                "schema": "bundler.lock-check/1",
                "lock": str(status.lock),
                "fresh": True,
                "input_sha256": status.input_sha256,
                "lock_sha256": status.lock_sha256,
                "model_commit": model_lock.get("commit") if model_lock else None,
                "model_sha256": (model_lock.get("gguf") or {}).get("sha256") if model_lock else None,
            },
            as_json,
            f"{status.lock} is fresh"
            + (f"\n{models.MODEL_LOCK} pins {models.pin_summary(model_lock)}" if model_lock else ""),
        )
        return
    # The model first: a wrong repo or revision fails in a second, not after a dependency resolution.
    model_path, model_lock = models.write_model_lock(project_dir, config, offline=offline) if from_hub else (None, None)
    result = locking.write_lock(project_dir, env, offline=offline)
    record = images.write_image_lock(project_dir, env, offline=offline)
    pinned_model = f"\npinned {models.pin_summary(model_lock)} in {model_path}" if model_lock else ""
    emit(
        {
            "schema": "bundler.lock/1",
            "lock": str(result.lock),
            "lock_sha256": result.lock_sha256,
            "input_sha256": result.input_sha256,
            "resolver": result.resolver,
            "resolver_version": result.resolver_version,
            "cached": result.cached,
            "added_runtime": list(result.added_runtime),
            "variants": result.variants,
            "image": record["reference"],
            "image_digest": record["digest"],
            "model_lock": str(model_path) if model_path else None,
            "model_commit": model_lock.get("commit") if model_lock else None,
            "model_files": len(model_lock["files"]) if model_lock and "files" in model_lock else None,
            "model_sha256": (model_lock.get("gguf") or {}).get("sha256") if model_lock else None,
        },
        as_json,
        f"wrote {result.lock}{' (cached)' if result.cached else ''}\n"
        f"pinned {record['reference']}@{record['digest']}{pinned_model}",
    )


# --- export / import / diff (archive.py, diff.py, issue 5) ---


@click.command()
@click.argument("project", type=click.Path(path_type=Path), default=".")
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the manifest (default: PROJECT/splits.json).",
)
@json_option
@handles_errors
def split(project: Path, out: Path | None, as_json: bool) -> None:
    """Split PROJECT's dataset into train/val/test (seeded, deduped, leakage-checked); write splits.json."""
    from bundler.recipe.config import load_config
    from bundler.recipe.splits import make_split_manifest, summarize, summary_lines, write_manifest

    config = load_config(project).resolved()
    project_dir = project if project.is_dir() else project.parent
    manifest = make_split_manifest(config, project_dir)
    target = out or project_dir / "splits.json"
    write_manifest(manifest, target)
    summary = {**summarize(manifest), "manifest": str(target)}
    emit(summary, as_json, "\n".join([*summary_lines(summary), f"wrote {target}"]))


@click.command()
@click.argument("project", type=click.Path(path_type=Path), default=".")
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory to write the bundle into (must not hold one).",
)
@click.option("--allow-dirty", is_flag=True, help="Bundle uncommitted changes as a patch; the bundle is marked dirty.")
@click.option("--runner", type=RUNNER_CHOICE, default="venv", show_default=True, help="Where the fine-tune runs.")
@click.option("--no-run", is_flag=True, help="Write the bundle without running the fine-tune.")
@click.option("--no-vendor-data", is_flag=True, help="Do not copy the dataset files into data/vendor/.")
@click.option(
    "--vendor", is_flag=True, help="Store the locked wheels in data/vendor/wheels/ so the image rebuilds with no index."
)
@click.option("--gpus", help="docker runner: 'all' or a number of GPUs.")
@click.option("--push", "push_repo", metavar="ORG/NAME", help="Publish the adapter and card to this Hub repo.")
@json_option
@handles_errors
def build(
    project: Path,
    out: Path,
    allow_dirty: bool,
    runner: str,
    no_run: bool,
    no_vendor_data: bool,
    vendor: bool,
    gpus: str | None,
    push_repo: str | None,
    as_json: bool,
) -> None:
    """Build a bundle from PROJECT (lock check, split, pack, run, card); print the bundle ID."""
    from bundler.pipeline import build as build_bundle

    result = build_bundle(
        project,
        out,
        allow_dirty=allow_dirty,
        runner=runner,
        run=not no_run,
        push=push_repo,
        vendor_data=not no_vendor_data,
        vendor=vendor,
        gpus=gpus,
    )
    emit(result.as_dict(), as_json, result.bundle_id)


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--runner", type=RUNNER_CHOICE, default="venv", show_default=True)
@click.option(
    "--model", "model_dir", type=click.Path(path_type=Path), help="Model snapshot, when the bundle does not vendor it."
)
@click.option(
    "--data", "data_dir", type=click.Path(path_type=Path), help="Dataset directory, when the bundle does not vendor it."
)
@click.option(
    "--allow-drift", is_flag=True, help="host runner: run even when installed versions differ from the lock (recorded)."
)
@click.option("--gpus", help="docker runner: 'all' or a number of GPUs (N GPUs: N processes, one a GPU).")
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    help="Processes to train with (accelerate launch), instead of [train] num_processes.",
)
@json_option
@handles_errors
def run(
    bundle: Path,
    runner: str,
    model_dir: Path | None,
    data_dir: Path | None,
    allow_drift: bool,
    gpus: str | None,
    processes: int | None,
    as_json: bool,
) -> None:
    """Run a finished BUNDLE again into a new data/runs/<run-id>/; print the run ID."""
    from bundler.bundle.bag import open_bundle
    from bundler.bundle.verify import require_verified
    from bundler.errors import InputError, VerifyFailed
    from bundler.runners.execute import locate_inputs, run_bundle

    open_bundle(bundle)
    try:
        require_verified(bundle)
    except VerifyFailed as exc:
        raise InputError(str(exc), "a bundle that fails verify is never run; restore it from its archive") from None
    model, data = locate_inputs(bundle, model_dir, data_dir, runner)
    run_id = run_bundle(
        bundle, runner=runner, model_dir=model, data_dir=data, allow_drift=allow_drift, gpus=gpus, processes=processes
    )
    emit({"schema": "bundler.run/1", "bundle": str(bundle), "run_id": run_id}, as_json, run_id)
