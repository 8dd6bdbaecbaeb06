"""Commands that sign: keygen, sign."""

from __future__ import annotations

from pathlib import Path

import click

from bundler.cli.options import emit, handles_errors, json_option


@click.command()
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
    from bundler.bundle.signing import generate_key

    public_path, public = generate_key(out)
    result = {
        "schema": "bundler.keygen/1",
        "private_key": str(out),
        "public_key": str(public_path),
        "keyid": public.keyid,
    }
    emit(result, as_json, public.keyid)


@click.command()
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
    from bundler.publish.sign import sign_bundle

    result = sign_bundle(bundle, key)
    runs = len(result["runs"])
    emit(result, as_json, f"signed {result['bundle_id']} with {result['keyid']} ({runs} run statement(s))")


# --- check (check.py, runtime/check.py, issue 12) ---
