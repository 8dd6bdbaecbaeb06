"""Commands that make a bundle: init, lock, split, build, run."""

from __future__ import annotations

from pathlib import Path

import click

from bundler.cli.options import RUNNER_CHOICE, emit, handles_errors, json_option, resolved_path

# `bundler run --json`; until issue 17 it was also "bundler.run/1", the name of run.json's own shape.
RUN_RESULT_SCHEMA = "bundler.run-result/1"


@click.command()
@click.argument("path", type=resolved_path(file_okay=False), default=".")
@click.option("--name", help="Project name (default: the directory name).")
@handles_errors
def init(path: Path, name: str | None) -> None:
    """Write a commented bundle.toml and requirements.in into PATH."""
    from bundler.recipe.scaffold import init_project

    written = init_project(path, name)
    for file in written:
        click.echo(str(file))


@click.command()
@click.argument("project", type=resolved_path(), default=".")
@click.option("--check", is_flag=True, help="Only check the lock is fresh; exit 1 when requirements.in changed.")
@click.option("--offline", is_flag=True, help="No network: reuse cached locks and the catalog's image digest.")
@json_option
@handles_errors
def lock(project: Path, check: bool, offline: bool, as_json: bool) -> None:
    """Write requirements.lock (hashes, for the target image), image.lock.json (base image digest) and,
    for a Hub base model, model.lock.json (its commit and the sha256 of every file a load reads)."""
    from bundler.recipe import images, models
    from bundler.recipe import lock as locking
    from bundler.recipe.configfile import load_config

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
@click.argument("project", type=resolved_path(), default=".")
@click.option(
    "--out",
    "-o",
    type=resolved_path(dir_okay=False),
    help="Where to write the manifest (default: PROJECT/splits.json).",
)
@json_option
@handles_errors
def split(project: Path, out: Path | None, as_json: bool) -> None:
    """Split PROJECT's dataset into train/val/test (seeded, deduped, leakage-checked); write splits.json."""
    from bundler.recipe.configfile import load_config
    from bundler.recipe.splits import make_split_manifest, summarize, summary_lines, write_manifest

    config = load_config(project).resolved()
    project_dir = project if project.is_dir() else project.parent
    manifest = make_split_manifest(config, project_dir)
    target = out or project_dir / "splits.json"
    write_manifest(manifest, target)
    summary = {**summarize(manifest), "manifest": str(target)}
    emit(summary, as_json, "\n".join([*summary_lines(summary), f"wrote {target}"]))


@click.command()
@click.argument("project", type=resolved_path(), default=".")
@click.option(
    "--out",
    "-o",
    type=resolved_path(),
    required=True,
    help="Directory to write the bundle into (must not hold one).",
)
@click.option("--allow-dirty", is_flag=True, help="Bundle uncommitted changes as a patch; the bundle is marked dirty.")
@click.option(
    "--runner",
    type=RUNNER_CHOICE,
    default="auto",
    envvar="BUNDLER_RUNNER",
    show_default=True,
    help="Where the fine-tune runs; auto: docker when an engine answers, else venv (stderr says which and why).",
)
@click.option("--no-run", is_flag=True, help="Write the bundle without running the fine-tune.")
@click.option("--no-vendor-data", is_flag=True, help="Do not copy the dataset files into data/vendor/.")
@click.option(
    "--vendor", is_flag=True, help="Store the locked wheels in data/vendor/wheels/ so the image rebuilds with no index."
)
@click.option("--gpus", help="docker runner: 'all' or a number of GPUs.")
@click.option("--push", "push_repo", metavar="ORG/NAME", help="Publish the adapter and card to this Hub repo.")
@click.option(
    "--allow-secrets-in-data",
    is_flag=True,
    help="Vendor a dataset that holds token shapes (each is named in the output) instead of refusing it.",
)
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
    allow_secrets_in_data: bool,
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
        allow_secrets_in_data=allow_secrets_in_data,
    )
    emit(result.as_dict(), as_json, result.bundle_id)


@click.command()
@click.argument("bundle", type=resolved_path())
@click.option(
    "--runner",
    type=RUNNER_CHOICE,
    default="auto",
    envvar="BUNDLER_RUNNER",
    show_default=True,
    help="auto: docker when an engine answers, else venv.",
)
@click.option(
    "--model", "model_dir", type=resolved_path(), help="Model snapshot, when the bundle does not vendor it."
)
@click.option(
    "--data", "data_dir", type=resolved_path(), help="Dataset directory, when the bundle does not vendor it."
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
@click.option(
    "--emit",
    "emit_target",
    type=click.Choice(["kubernetes"]),
    help="Write manifests to run the bundle on a cluster (PyTorchJob, and an Indexed Job fallback) instead of running.",
)
@click.option("--out-manifests", type=click.Path(file_okay=False, path_type=Path), help="--emit: where to write them.")
@click.option("--image", help="--emit: the bundle's image as REPOSITORY@sha256:DIGEST.")
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True, help="--emit: pods (machines).")
@click.option("--gpus-per-node", type=click.IntRange(min=1), default=1, show_default=True, help="--emit: ranks a pod.")
@click.option("--model-uri", help="--emit: the model snapshot: pvc:CLAIM[/PATH] or hostpath:/PATH (read-only).")
@click.option("--data-uri", help="--emit: the dataset directory: pvc:CLAIM[/PATH] or hostpath:/PATH (read-only).")
@click.option("--output-uri", help="--emit: where rank 0 writes the run: pvc:CLAIM[/PATH] or hostpath:/PATH.")
@click.option("--namespace", help="--emit: the namespace of the manifests (default: the one kubectl uses).")
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
    emit_target: str | None,
    out_manifests: Path | None,
    image: str | None,
    nodes: int,
    gpus_per_node: int,
    model_uri: str | None,
    data_uri: str | None,
    output_uri: str | None,
    namespace: str | None,
    as_json: bool,
) -> None:
    """Run a finished BUNDLE again into a new data/runs/<run-id>/; print the run ID.

    With --emit kubernetes, write the manifests that run it on a cluster instead; `bundler record`
    brings the outputs back as a run.
    """
    from bundler.bundle.bag import open_bundle
    from bundler.bundle.verify import require_verified
    from bundler.errors import InputError, VerifyFailed

    open_bundle(bundle)
    try:
        require_verified(bundle)
    except VerifyFailed as exc:
        raise InputError(str(exc), "a bundle that fails verify is never run; restore it from its archive") from None
    if emit_target == "kubernetes":
        from bundler.runners.kubernetes import plan_run, write_manifests

        plan = plan_run(
            bundle,
            image=image,
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            model=model_uri,
            data=data_uri,
            output=output_uri,
            namespace=namespace,
        )
        written = write_manifests(plan, out_manifests or Path(f"{plan.name}-manifests"))
        result = {
            "schema": "bundler.emit/1",
            "bundle_id": plan.bundle_id,
            "world_size": plan.world_size,
            "nodes": plan.nodes,
            "gpus_per_node": plan.gpus_per_node,
            "manifests": {form: str(path) for form, path in sorted(written.items())},
        }
        emit(result, as_json, "\n".join(str(path) for _, path in sorted(written.items())))
        return
    from bundler.runners.execute import locate_inputs, run_bundle

    model, data = locate_inputs(bundle, model_dir, data_dir, runner)
    run_id = run_bundle(
        bundle, runner=runner, model_dir=model, data_dir=data, allow_drift=allow_drift, gpus=gpus, processes=processes
    )
    emit({"schema": RUN_RESULT_SCHEMA, "bundle": str(bundle), "run_id": run_id}, as_json, run_id)


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.option("--world-size", type=click.IntRange(min=1), help="Refuse outputs of another world size.")
@json_option
@handles_errors
def record(bundle: Path, output_dir: Path, world_size: int | None, as_json: bool) -> None:
    """Add the outputs of a run made elsewhere (a cluster) to BUNDLE as a run, after checking them against its recipe.

    OUTPUT_DIR is what rank 0 wrote. Refused (exit 1, nothing added) unless env.json names this bundle's ID,
    the libraries are the locked ones, the adapter matches results.json's sha256, the world size is recorded
    alike in results.json and env.json, and every step's loss and the evaluation are there. Exit 2 when
    OUTPUT_DIR is not a run's outputs at all.
    """
    from bundler.bundle.bag import open_bundle
    from bundler.bundle.verify import require_verified
    from bundler.errors import InputError, VerifyFailed
    from bundler.runners.record import record_outputs

    open_bundle(bundle)
    try:
        require_verified(bundle)
    except VerifyFailed as exc:
        raise InputError(str(exc), "a bundle that fails verify takes no new run; restore it from its archive") from None
    run_id = record_outputs(bundle, output_dir, expected_world_size=world_size)
    emit({"schema": "bundler.record/1", "bundle": str(bundle), "run_id": run_id}, as_json, run_id)
