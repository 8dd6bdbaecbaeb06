"""Commands that sign: keygen, sign."""

from __future__ import annotations

from pathlib import Path

import click

from bundler.cli.options import emit, handles_errors, json_option, resolved_path


@click.command()
@click.option(
    "--out",
    "-o",
    "out",
    type=resolved_path(dir_okay=False),
    required=True,
    help="Private key file to write (0600); the public key goes to OUT.pub.",
)
@click.option(
    "--algorithm",
    type=click.Choice(["ecdsa-p256", "ed25519"]),
    default="ecdsa-p256",
    show_default=True,
    help="EC P-256 signs adapters with OpenSSF Model Signing too; ed25519 signs the bundle only.",
)
@json_option
@handles_errors
def keygen(out: Path, algorithm: str, as_json: bool) -> None:
    """Make a signing key (EC P-256 PEM): OUT stays private, OUT.pub is what auditors trust; print the key ID."""
    from bundler.bundle.signing import generate_key

    public_path, public = generate_key(out, algorithm)
    result = {
        "schema": "bundler.keygen/1",
        "private_key": str(out),
        "public_key": str(public_path),
        "keyid": public.keyid,
        "algorithm": public.algorithm,
    }
    emit(result, as_json, public.keyid)


@click.command()
@click.argument("bundle", type=resolved_path())
@click.option(
    "--key",
    "key",
    type=resolved_path(dir_okay=False),
    required=True,
    help="EC P-256 (or ed25519) private key, PEM; only its public key and key ID enter the bundle.",
)
@json_option
@handles_errors
def sign(bundle: Path, key: Path, as_json: bool) -> None:
    """Sign BUNDLE's run statements, manifest (DSSE) and adapters (OpenSSF model.sig), offline.

    `bundler verify --key KEY.pub` checks them all; `model_signing verify key` checks a model.sig alone.
    """
    from bundler.publish.sign import sign_bundle

    result = sign_bundle(bundle, key)
    runs, models = len(result["runs"]), len(result["model_signatures"])
    emit(
        result,
        as_json,
        f"signed {result['bundle_id']} with {result['keyid']} into {result['signature']} "
        f"({runs} run statement(s), {models} new model.sig)",
    )
    if result["algorithm"] == "ed25519" and result["runs"] and not as_json:
        click.echo("note: an ed25519 key cannot make model.sig (OpenSSF Model Signing takes EC keys)", err=True)


# --- check (check.py, runtime/check.py, issue 12) ---
