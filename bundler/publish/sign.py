"""`bundler sign`: write any missing run statements, then sign them and the bundle's manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bundler.bundle.atomic import atomic_write_text
from bundler.bundle.attest import (
    BUNDLE_ENVELOPE,
    INTOTO_PAYLOAD_TYPE,
    MANIFEST_PAYLOAD_TYPE,
    PROVENANCE,
    SIGNER,
    SIGNER_SCHEMA,
    directory_reader,
    envelope_name,
    hash_bundle,
    signed_manifest,
    statement_findings,
    statement_name,
)
from bundler.bundle.bag import bundle_id_of, list_runs, open_bundle, payload_hashes, write_tags
from bundler.bundle.hashing import canonical_json
from bundler.bundle.signing import PublicKey, load_private_key, sign_envelope
from bundler.publish.provenance import write_provenance


def sign_bundle(bundle: Path, key_path: Path) -> dict[str, Any]:
    """Sign every run statement and the bundle's signed manifest with the ed25519 key at `key_path`.

    Writes missing statements first; refuses (VerifyFailed, exit 1) a bundle whose bag does not
    verify or whose statements no longer match its files, since signing would bless the change.
    """
    from bundler.bundle.verify import verify_bundle
    from bundler.errors import VerifyFailed

    key = load_private_key(key_path)
    open_bundle(bundle)
    bag_findings = [f for f in verify_bundle(bundle).findings if not f.startswith(PROVENANCE + "/")]
    if bag_findings:
        raise VerifyFailed(bundle, bag_findings)
    for run_id in list_runs(bundle):
        if not (bundle / statement_name(run_id)).is_file():
            write_provenance(bundle, run_id)
    stale = statement_findings(hash_bundle(bundle), directory_reader(bundle))
    if stale:
        raise VerifyFailed(bundle, stale)

    public = PublicKey(key.public_key())
    signer = {"schema": SIGNER_SCHEMA, "algorithm": "ed25519", "keyid": public.keyid, "public_key": public.pem}
    atomic_write_text(bundle / SIGNER, canonical_json(signer))
    runs = sorted(p.name.removesuffix(".intoto.json") for p in (bundle / PROVENANCE).glob("*.intoto.json"))
    for run_id in runs:
        body = (bundle / statement_name(run_id)).read_bytes()
        atomic_write_text(bundle / envelope_name(run_id), canonical_json(sign_envelope(INTOTO_PAYLOAD_TYPE, body, key)))
    for old in (bundle / PROVENANCE).glob("*.intoto.dsse.json"):
        if old.name.removesuffix(".intoto.dsse.json") not in runs:
            old.unlink()
    manifest = signed_manifest(bundle, public.keyid)
    envelope = sign_envelope(MANIFEST_PAYLOAD_TYPE, canonical_json(manifest).encode("utf-8"), key)
    atomic_write_text(bundle / BUNDLE_ENVELOPE, canonical_json(envelope))
    write_tags(bundle, payload_hashes(bundle))
    return {
        "schema": "bundler.sign/1",
        "bundle": str(bundle),
        "bundle_id": bundle_id_of(bundle),
        "keyid": public.keyid,
        "runs": runs,
        "files": sorted([SIGNER, BUNDLE_ENVELOPE, *(envelope_name(r) for r in runs)]),
    }
