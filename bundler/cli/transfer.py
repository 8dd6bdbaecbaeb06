"""Commands that move a bundle: export, import."""

from __future__ import annotations

from pathlib import Path

import click

from bundler.cli.options import emit, handles_errors, json_option


@click.command()
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
    from bundler.bundle.archive import export_bundle
    from bundler.bundle.bag import open_bundle

    result = export_bundle(open_bundle(bundle), archive)
    emit(result.as_dict(), as_json, f"{result.sha256}  {result.archive}")


@click.command(name="import")
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
    """Check every header of ARCHIVE, extract it into a temp dir, verify it, rename it to --out.

    Exit 2 when ARCHIVE is damaged, hostile or not a bundle (nothing is written); exit 1 when it fails verify.
    `--json` prints the verify report (schema bundler.import/2: findings are {kind, path, detail}).
    """
    from bundler.bundle.archive import ImportLimits, import_bundle

    limits = ImportLimits(max_members=max_members, max_member_bytes=max_bytes, max_total_bytes=max_bytes)
    report = import_bundle(archive, out, limits)
    emit(
        {**report.as_dict(), "schema": "bundler.import/2"},
        as_json,
        f"imported {report.bundle_id} into {out} ({report.files_checked} files verified)",
    )
