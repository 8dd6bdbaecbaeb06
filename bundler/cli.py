"""The command line: parse, call the library, turn errors into two lines and an exit code.

Results go to stdout (`--json`: one object with a `schema` key); logs and progress go to stderr.
Exit codes: 0 ok, 1 a check failed, 2 usage, config or input error. Nothing here imports torch.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from bundler import __version__

F = TypeVar("F", bound=Callable[..., Any])
RUNNER_CHOICE = click.Choice(["auto", "docker", "venv", "host"])


def emit(result: dict[str, Any], as_json: bool, text: str) -> None:
    """Print the result: one JSON object, or `text` for a person."""
    click.echo(json.dumps(result, sort_keys=True) if as_json else text)


def _fail(message: str, hint: str, code: int) -> None:
    plain = "NO_COLOR" in os.environ or not sys.stderr.isatty()
    first, _, rest = message.partition("\n")
    click.echo(("error: " if plain else "\x1b[31merror:\x1b[0m ") + first, err=True)
    if rest:
        click.echo(rest, err=True)
    if hint:
        click.echo(("hint: " if plain else "\x1b[36mhint:\x1b[0m ") + hint, err=True)
    sys.exit(code)


def handles_errors(func: F) -> F:
    """Map BundlerError (and the unexpected) to a message, a next step and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from bundler.errors import EXIT_INPUT, BundlerError

        try:
            return func(*args, **kwargs)
        except BundlerError as exc:
            if os.environ.get("BUNDLER_DEBUG"):
                traceback.print_exc()
            _fail(str(exc), exc.hint, exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; nothing was written under the final name", "", 130)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place that turns a crash into a message
            if os.environ.get("BUNDLER_DEBUG"):
                traceback.print_exc()
            _fail(
                f"internal error: {type(exc).__name__}: {exc}",
                "rerun with BUNDLER_DEBUG=1 for the traceback and report it",
                EXIT_INPUT,
            )

    return wrapper  # type: ignore[return-value]


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bundler")
def main() -> None:
    """Reproducible, auditable LoRA fine-tuning: lock, split, pack, run, verify, replay, publish."""


@main.command()
@click.argument("path", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--name", help="Project name (default: the directory name).")
@handles_errors
def init(path: Path, name: str | None) -> None:
    """Write a commented bundle.toml and requirements.in into PATH."""
    from bundler.scaffold import init_project

    written = init_project(path, name)
    for file in written:
        click.echo(str(file))


@main.command()
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


@main.command()
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
    from bundler.bundle import open_bundle, require_verified
    from bundler.errors import InputError, VerifyFailed
    from bundler.pipeline import locate_inputs, run_bundle

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


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--key",
    "trusted_keys",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A public key the signatures must come from (repeatable); without it, the recorded signer is checked.",
)
@json_option
@handles_errors
def verify(bundle: Path, trusted_keys: tuple[Path, ...], as_json: bool) -> None:
    """Re-hash every file of BUNDLE; exit 1 naming each changed, missing, extra or renamed file."""
    from bundler.bundle import verify_bundle
    from bundler.errors import InputError, VerifyFailed

    report = verify_bundle(bundle)
    if trusted_keys:
        if not bundle.is_dir():
            raise InputError(
                "--key checks a bundle directory", "import the archive first: `bundler import X.tar --out DIR`"
            )
        from bundler.provenance import bundle_findings
        from bundler.signing import load_public_key

        keys = [load_public_key(k) for k in trusted_keys]
        report.findings += [f for f in bundle_findings(bundle, keys) if "trusted key" in f or "not signed" in f]
    if as_json:
        emit(report.as_dict(), True, "")
        if not report.ok:
            sys.exit(1)
        return
    if not report.ok:
        raise VerifyFailed(bundle, report.findings)
    click.echo(f"ok {report.bundle_id} ({report.files_checked} files, {report.bytes_checked} bytes)")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@json_option
@handles_errors
def inspect(bundle: Path, as_json: bool) -> None:
    """Show what BUNDLE holds: identity, source, config, splits, leakage, runs and where they ran."""
    from bundler.inspect import describe_bundle, render_description

    description = describe_bundle(bundle)
    if as_json:
        emit(description, True, "")
    else:
        render_description(description)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--repo", "repo_id", required=True, metavar="ORG/NAME", help="Hub model repo to publish to (created if missing)."
)
@click.option(
    "--run", "run_id", metavar="RUN_ID", help="Run to publish (a unique prefix is enough; default: the latest)."
)
@click.option("--private", is_flag=True, help="Create the repo as private (an existing repo keeps its visibility).")
@click.option("--revision", metavar="BRANCH", help="Branch to commit to (created from main if missing; default: main).")
@json_option
@handles_errors
def push(bundle: Path, repo_id: str, run_id: str | None, private: bool, revision: str | None, as_json: bool) -> None:
    """Publish a run's adapter, model card and bundle manifest to the Hub in one commit; print the commit URL.

    The token comes from HF_TOKEN or the Hub's credential store (`hf auth login`), never from a file here.
    """
    from bundler.publish import push_run

    record = push_run(bundle, repo_id, run_id=run_id, private=private, revision=revision)
    if not record["new_commit"]:
        click.echo(f"{repo_id}@{record['revision']} already holds these files; no new commit", err=True)
    emit(record, as_json, record["commit_url"])


# --- split (splits.py, issue 4) ---
@main.command()
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
    from bundler.config import load_config
    from bundler.splits import make_split_manifest, summarize, summary_lines, write_manifest

    config = load_config(project).resolved()
    project_dir = project if project.is_dir() else project.parent
    manifest = make_split_manifest(config, project_dir)
    target = out or project_dir / "splits.json"
    write_manifest(manifest, target)
    summary = {**summarize(manifest), "manifest": str(target)}
    emit(summary, as_json, "\n".join([*summary_lines(summary), f"wrote {target}"]))


@main.command()
@click.argument("project", type=click.Path(path_type=Path), default=".")
@click.option("--check", is_flag=True, help="Only check the lock is fresh; exit 1 when requirements.in changed.")
@click.option("--offline", is_flag=True, help="No network: reuse cached locks and the catalog's image digest.")
@json_option
@handles_errors
def lock(project: Path, check: bool, offline: bool, as_json: bool) -> None:
    """Write requirements.lock (hashes, for the target image), image.lock.json (base image digest) and,
    for a Hub base model, model.lock.json (its commit and the sha256 of every file a load reads)."""
    from bundler import images, models
    from bundler import lock as locking
    from bundler.config import load_config

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
@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--output",
    "-o",
    "archive",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The .tar to write (byte-identical for the same bundle on any machine, any day).",
)
@json_option
@handles_errors
def export(bundle: Path, archive: Path, as_json: bool) -> None:
    """Verify BUNDLE and write it as one deterministic tar; print the tar's sha256."""
    from bundler.archive import export_bundle
    from bundler.bundle import open_bundle

    result = export_bundle(open_bundle(bundle), archive)
    emit(result.as_dict(), as_json, f"{result.sha256}  {result.archive}")


@main.command(name="import")
@click.argument("archive", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory to import into (must not hold anything).",
)
@click.option(
    "--max-members",
    type=click.IntRange(1),
    default=200_000,
    show_default=True,
    help="Refuse archives with more members.",
)
@click.option(
    "--max-bytes",
    type=click.IntRange(1),
    default=2 * 1024**4,
    show_default=True,
    help="Refuse archives holding more bytes.",
)
@json_option
@handles_errors
def import_(archive: Path, out: Path, max_members: int, max_bytes: int, as_json: bool) -> None:
    """Check every member of ARCHIVE, extract it into a temp dir, verify it, rename it to --out."""
    from bundler.archive import ImportLimits, import_bundle

    limits = ImportLimits(max_members=max_members, max_member_bytes=max_bytes, max_total_bytes=max_bytes)
    report = import_bundle(archive, out, limits)
    emit(
        {**report.as_dict(), "schema": "bundler.import/1"},
        as_json,
        f"imported {report.bundle_id} into {out} ({report.files_checked} files verified)",
    )


@main.command()
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@json_option
@handles_errors
def diff(old: Path, new: Path, as_json: bool) -> None:
    """Show what changed from bundle OLD to bundle NEW (directories or exported tars)."""
    from bundler.diff import diff_bundles, render_diff

    result = diff_bundles(old, new)
    emit(result, as_json, render_diff(result).rstrip("\n"))


# --- replay (replay.py, report.py, issue 8) ---
@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--runner", type=RUNNER_CHOICE, default=None, help="Where to run (default: the recorded run's runner).")
@click.option(
    "--run",
    "run_id",
    metavar="RUN_ID",
    help="Recorded run to compare with (a unique prefix; default: the latest full run).",
)
@click.option(
    "--tolerance",
    metavar="KEY=N,...",
    help="EQUIVALENT bounds: metric (absolute, 0.001), loss (relative, 1e-3), grad_norm (relative, 1e-2).",
)
@click.option(
    "--steps", type=int, metavar="N", help="Replay and compare only the first N steps (a quick, partial check)."
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write report.json, loss_overlay.png and report.html here.",
)
@click.option(
    "--allow-drift", is_flag=True, help="host runner: run even when installed versions differ from the lock (recorded)."
)
@click.option(
    "--model", "model_dir", type=click.Path(path_type=Path), help="Model snapshot, when the bundle does not vendor it."
)
@click.option(
    "--data", "data_dir", type=click.Path(path_type=Path), help="Dataset directory, when the bundle does not vendor it."
)
@click.option("--gpus", help="docker runner: 'all' or a number of GPUs.")
@json_option
@handles_errors
def replay(
    bundle: Path,
    runner: str | None,
    run_id: str | None,
    tolerance: str | None,
    steps: int | None,
    report_dir: Path | None,
    allow_drift: bool,
    model_dir: Path | None,
    data_dir: Path | None,
    gpus: str | None,
    as_json: bool,
) -> None:
    """Verify BUNDLE, run it again, compare with a recorded run: IDENTICAL, EQUIVALENT (exit 0) or DIVERGED (1)."""
    from bundler.errors import ReplayDiverged
    from bundler.replay import parse_tolerance, replay_bundle
    from bundler.report import render_table, write_report

    bounds = parse_tolerance(tolerance)  # before anything runs: a typo must not cost a training run
    report = replay_bundle(
        bundle,
        runner=runner,
        run_id=run_id,
        tolerance=bounds,
        steps=steps,
        allow_drift=allow_drift,
        model_dir=model_dir,
        data_dir=data_dir,
        gpus=gpus,
    )
    if report_dir is not None:
        written = write_report(report, report_dir)
        click.echo(f"report written to {written['report.html']}", err=True)
    if as_json:
        emit(report, True, "")
    else:
        render_table(report)
    if report["verdict"] == "DIVERGED":
        summary = (report["divergence"] or {}).get("detail", "outside tolerance")
        raise ReplayDiverged(report["recorded_run"], report["replay_run"], summary, report["causes"])


# --- keygen / sign (signing.py, provenance.py, issue 10) ---
@main.command()
@click.option(
    "--out",
    "-o",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Private key file to write (0600); the public key goes to OUT.pub.",
)
@json_option
@handles_errors
def keygen(out: Path, as_json: bool) -> None:
    """Make an ed25519 signing key: OUT stays private, OUT.pub is what auditors trust; print the key ID."""
    from bundler.signing import generate_key

    public_path, public = generate_key(out)
    result = {
        "schema": "bundler.keygen/1",
        "private_key": str(out),
        "public_key": str(public_path),
        "keyid": public.keyid,
    }
    emit(result, as_json, public.keyid)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--key",
    "key",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="ed25519 private key (PEM); only its public key and key ID enter the bundle.",
)
@json_option
@handles_errors
def sign(bundle: Path, key: Path, as_json: bool) -> None:
    """Sign BUNDLE's run statements and manifest (DSSE, ed25519, offline); `bundler verify` checks them."""
    from bundler.signing import sign_bundle

    result = sign_bundle(bundle, key)
    runs = len(result["runs"])
    emit(result, as_json, f"signed {result['bundle_id']} with {result['keyid']} ({runs} run statement(s))")


# --- check (check.py, runtime/check.py, issue 12) ---
@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--run", "run_id", metavar="RUN_ID", help="Run whose reference outputs to compare with (default: the latest)."
)
@click.option(
    "--adapter",
    metavar="PATH_OR_HUB_ID",
    help="Adapter directory, or Hub repo ORG/NAME[@REVISION] (default: the run's own adapter).",
)
@click.option("--runner", type=click.Choice(["venv", "host"]), default="venv", show_default=True)
@click.option(
    "--model", "model_dir", type=click.Path(path_type=Path), help="Model snapshot, when the bundle does not vendor it."
)
@click.option(
    "--data", "data_dir", type=click.Path(path_type=Path), help="Dataset directory, when the bundle does not vendor it."
)
@click.option(
    "--allow-drift", is_flag=True, help="host runner: check even when installed versions differ from the lock."
)
@click.option(
    "--allow-mismatch", is_flag=True, help="Check an adapter whose files differ from the run's recorded hashes."
)
@json_option
@handles_errors
def check(
    bundle: Path,
    run_id: str | None,
    adapter: str | None,
    runner: str,
    model_dir: Path | None,
    data_dir: Path | None,
    allow_drift: bool,
    allow_mismatch: bool,
    as_json: bool,
) -> None:
    """Run inference with an adapter and compare with the run's reference outputs (no retraining).

    IDENTICAL or EQUIVALENT exit 0; DIVERGED exits 1. Nothing is written into the bundle.
    """
    from bundler.check import DIVERGED, check_run, report_lines
    from bundler.errors import CheckDiverged

    report = check_run(
        bundle,
        run_id=run_id,
        adapter=adapter,
        runner=runner,
        allow_drift=allow_drift,
        allow_mismatch=allow_mismatch,
        model_dir=model_dir,
        data_dir=data_dir,
    )
    emit(report, as_json, "\n".join(report_lines(report)))
    if report["verdict"] == DIVERGED:
        if as_json:
            sys.exit(1)
        raise CheckDiverged(report["run_id"], "; ".join(report["problems"][:3]))
