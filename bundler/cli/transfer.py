"""Commands that move a bundle: export, import."""

from __future__ import annotations

from pathlib import Path

import click

from bundler.cli.options import allow_tag_option, emit, handles_errors, json_option, resolved_path


@click.command()
@click.argument("bundle", type=resolved_path())
@click.option(
    "--output",
    "-o",
    "archive",
    required=True,
    metavar="FILE.tar|oci://HOST[:PORT]/REPO[:TAG]",
    help="The .tar to write (byte-identical for the same bundle on any machine, any day), or a registry "
    "to push that tar to as an OCI artifact (prints the manifest digest).",
)
@json_option
@handles_errors
def export(bundle: Path, archive: str, as_json: bool) -> None:
    """Verify BUNDLE and write it as one deterministic tar (or push it to an OCI registry); print its digest."""
    from bundler.bundle.bag import open_bundle

    if archive.startswith("oci://"):
        from bundler.oci.push import push_bundle

        pushed = push_bundle(open_bundle(bundle), archive)
        emit(pushed.as_dict(), as_json, f"{pushed.digest}  {pushed.reference}")
        return
    from bundler.bundle.archive import export_bundle

    result = export_bundle(open_bundle(bundle), Path(archive).resolve())
    emit(result.as_dict(), as_json, f"{result.sha256}  {result.archive}")


@click.command(name="import")
@click.argument("archive", metavar="ARCHIVE|oci://HOST/REPO@sha256:DIGEST")
@click.option(
    "--out",
    "-o",
    type=resolved_path(),
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
@allow_tag_option
@json_option
@handles_errors
def import_(archive: str, out: Path, max_members: int, max_bytes: int, allow_tag: bool, as_json: bool) -> None:
    """Check every header of ARCHIVE (.tar, or a registry artifact by digest), extract, verify, rename to --out.

    Exit 2 when ARCHIVE is damaged, hostile, unreachable or not a bundle (nothing is written); exit 1 when it
    fails verify or a registry blob does not match its digest. `--json` prints the verify report (schema
    bundler.import/2: findings are {kind, path, detail}; `source` names the pinned oci:// reference).
    """
    from bundler.bundle.archive import ImportLimits, import_bundle

    limits = ImportLimits(max_members=max_members, max_member_bytes=max_bytes, max_total_bytes=max_bytes)
    if archive.startswith("oci://"):
        from bundler.oci.fetch import import_from_registry

        report, artifact = import_from_registry(archive, out, limits, allow_tag=allow_tag)
        if artifact.by_tag and not as_json:
            click.echo(f"note: {archive} resolved to {artifact.digest}", err=True)
        result = {**report.as_dict(), "schema": "bundler.import/2", "source": str(artifact.reference)}
    else:
        report = import_bundle(Path(archive).resolve(), out, limits)
        result = {**report.as_dict(), "schema": "bundler.import/2"}
    emit(result, as_json, f"imported {report.bundle_id} into {out} ({report.files_checked} files verified)")
