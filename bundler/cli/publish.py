"""Commands that publish: push, compliance."""

from __future__ import annotations

from pathlib import Path

import click

from bundler.cli.options import emit, handles_errors, json_option, resolved_path


@click.command()
@click.argument("bundle", type=resolved_path())
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
    from bundler.publish.push import push_run

    record = push_run(bundle, repo_id, run_id=run_id, private=private, revision=revision)
    if not record["new_commit"]:
        click.echo(f"{repo_id}@{record['revision']} already holds these files; no new commit", err=True)
    emit(record, as_json, record["commit_url"])


# --- split (splits.py, issue 4) ---


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--run", "run_id", default=None, help="Run ID (a unique prefix is enough); default: the latest run.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="New or empty directory to write.")
@click.option(
    "--check-report",
    "check_reports",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A `bundler check --json` report of this bundle to cite under validation (repeatable).",
)
@json_option
@handles_errors
def compliance(bundle: Path, run_id: str | None, out: Path, check_reports: tuple[Path, ...], as_json: bool) -> None:
    """Write compliance documents for a run: CycloneDX ML-BOM, EU AI Act Annex IV and XI, data summary, register."""
    from bundler.publish.compliance.write import write_compliance

    result = write_compliance(bundle, out, run_id, check_reports)
    lines = [f"{name}  {sha}" for name, sha in result.files.items()]
    emit(result.as_dict(), as_json, "\n".join([f"wrote {out} for run {result.run_id[:12]}", *lines]))
