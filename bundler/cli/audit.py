"""Commands that judge a finished bundle: verify, inspect, diff, replay, check."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bundler.cli.options import RUNNER_CHOICE, allow_tag_option, emit, handles_errors, json_option, resolved_path


@click.command()
@click.argument("target", metavar="BUNDLE|FILE.tar|oci://HOST/REPO@sha256:DIGEST")
@click.option(
    "--key",
    "trusted_keys",
    multiple=True,
    type=resolved_path(),
    help="A public key the governing signature must come from (repeatable); without it, any valid signature "
    "governs. On a directory, each adapter's OpenSSF model.sig must verify with one of them too.",
)
@click.option("--strict", is_flag=True, help="Also fail on files added after the governing signature was made.")
@allow_tag_option
@json_option
@handles_errors
def verify(target: str, trusted_keys: tuple[Path, ...], strict: bool, allow_tag: bool, as_json: bool) -> None:
    """Check a bundle (a directory, an exported .tar, or a registry artifact by digest): BagIt 1.0, IDs, signatures.

    Exit 1 naming each file and rule that failed; exit 2 when it is not a bundle or cannot be read.
    """
    from bundler.bundle.archive import verify_target
    from bundler.bundle.signing import load_public_key
    from bundler.errors import VerifyFailed

    keys = [load_public_key(k) for k in trusted_keys] or None
    bundle, pulled = Path(target).resolve(), {}
    if target.startswith("oci://"):
        from bundler.oci.fetch import verify_from_registry

        report, artifact = verify_from_registry(target, allow_tag=allow_tag, trusted_keys=keys, strict=strict)
        bundle, pulled = Path(str(artifact.reference)), {"source": str(artifact.reference), "digest": artifact.digest}
        if artifact.by_tag and not as_json:
            click.echo(f"note: {target} resolved to {artifact.digest}", err=True)
    else:
        report = verify_target(bundle, trusted_keys=keys, strict=strict)
        if keys and bundle.is_dir():
            from bundler.bundle.oms import model_signature_findings

            report.findings += model_signature_findings(bundle, keys)
    if as_json:
        emit({**report.as_dict(), **pulled}, True, "")
        if not report.ok:
            sys.exit(1)
        return
    if not report.ok:
        raise VerifyFailed(Path(pulled.get("source", target)), sorted(report.findings))
    for path in report.unsigned:
        click.echo(f"unsigned addition: {path} (added after the governing signature; --strict refuses it)", err=True)
    governing = next((s["name"] for s in report.signatures if s.get("governing")), None)
    signed = f", signed: {governing}" if governing else ""
    click.echo(f"ok {report.bundle_id} ({report.files_checked} files, {report.bytes_checked} bytes{signed})")
    if pulled:
        click.echo(pulled["source"])


@click.command()
@click.argument("bundle", type=resolved_path())
@json_option
@handles_errors
def inspect(bundle: Path, as_json: bool) -> None:
    """Show what BUNDLE holds: identity, source, config, splits, leakage, runs and where they ran."""
    from bundler.audit.show import describe_bundle, render_description

    description = describe_bundle(bundle)
    if as_json:
        emit(description, True, "")
    else:
        render_description(description)


@click.command()
@click.argument("old", type=resolved_path())
@click.argument("new", type=resolved_path())
@json_option
@handles_errors
def diff(old: Path, new: Path, as_json: bool) -> None:
    """Show what changed from bundle OLD to bundle NEW (directories or exported tars)."""
    from bundler.audit.diff import diff_bundles, render_diff

    result = diff_bundles(old, new)
    emit(result, as_json, render_diff(result).rstrip("\n"))


# --- replay (replay.py, report.py, issue 8) ---


@click.command()
@click.argument("bundle", type=resolved_path())
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
    type=resolved_path(file_okay=False),
    help="Write report.json, loss_overlay.png and report.html here.",
)
@click.option(
    "--allow-drift", is_flag=True, help="host runner: run even when installed versions differ from the lock (recorded)."
)
@click.option(
    "--model", "model_dir", type=resolved_path(), help="Model snapshot, when the bundle does not vendor it."
)
@click.option(
    "--data", "data_dir", type=resolved_path(), help="Dataset directory, when the bundle does not vendor it."
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
    from bundler.audit.replay import replay_bundle
    from bundler.audit.report import render_table, write_report
    from bundler.audit.runcompare import parse_tolerance
    from bundler.errors import ReplayDiverged

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


@click.command()
@click.argument("bundle", type=resolved_path())
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
    "--model", "model_dir", type=resolved_path(), help="Model snapshot, when the bundle does not vendor it."
)
@click.option(
    "--data", "data_dir", type=resolved_path(), help="Dataset directory, when the bundle does not vendor it."
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
    from bundler.audit.check import DIVERGED, check_run, report_lines
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
