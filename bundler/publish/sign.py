"""`bundler sign`: write any missing run statements, then add one signature directory, atomically.

A signature is provenance/signatures/<NNNN>-<key>/ (bundler.bundle.attest). It is written in a temp
directory beside the bundle and renamed into place in one step, so either all of its files appear or
none do; a failed or killed `sign` leaves the bundle as it was and can simply be run again (its temp
directory is removed by the next `sign`, the way build removes its own). No other file of the bundle
changes, so an earlier signature stays valid.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import Any

from bundler.bundle.atomic import interrupts_as_keyboard
from bundler.bundle.attest import (
    BUNDLE_ENVELOPE_FILE,
    INTOTO_PAYLOAD_TYPE,
    MANIFEST_PAYLOAD_TYPE,
    SIGNER_FILE,
    envelope_file,
    signature_dir_name,
    signature_dirs,
    signed_manifest,
    statement_name,
)
from bundler.bundle.bag import RUNS, SIGNATURES, list_runs, open_bundle, record_run_file, remove_stale_partials
from bundler.bundle.bagit import bag_info_pairs
from bundler.bundle.hashing import canonical_json
from bundler.bundle.oms import ADAPTER_DIR, MODEL_SIGNATURE, can_sign_models, sign_adapter
from bundler.bundle.signing import PublicKey, load_private_key, sign_envelope, signer_record
from bundler.bundle.verify import verify_bundle
from bundler.errors import InputError, VerifyFailed
from bundler.publish.provenance import write_provenance

# Findings about earlier signatures do not stop a new one: signing again is how a change after a push is vouched for.
_SIGNATURE_KINDS = frozenset(
    {"signature", "signed-changed", "signed-missing", "unsigned-addition", "untrusted", "not-signed"}
)


def sign_bundle(bundle: Path, key_path: Path) -> dict[str, Any]:
    """Add a signature over every file of `bundle` (and each run statement) by the key at `key_path`.

    With an EC key it first writes each run's OMS model.sig (bundle/oms.py) that is missing; ed25519
    keys cannot make one (OMS takes EC keys only).

    Refuses (VerifyFailed, exit 1) a bundle that fails verify for any reason but its earlier signatures,
    since signing would bless the change.
    """
    key = load_private_key(key_path)
    open_bundle(bundle)
    remove_stale_partials(bundle)
    for run_id in list_runs(bundle):
        if not (bundle / statement_name(run_id)).is_file():
            write_provenance(bundle, run_id)  # bundles made before statements were written at run time
    public = PublicKey(key.public_key())
    # Before the signature directory, so the new signature covers the model.sig files it adds.
    model_signatures = sign_adapters(bundle, key_path) if can_sign_models(public) else []
    report = verify_bundle(bundle)
    blocking = [f for f in report.findings if f.kind not in _SIGNATURE_KINDS]
    if blocking:
        raise VerifyFailed(bundle, sorted(blocking))

    hashed = report.sha256
    bag_info = bag_info_pairs((bundle / "bag-info.txt").read_text(encoding="utf-8"))
    manifest = signed_manifest(hashed, bag_info, report.bundle_id, public.keyid)
    runs = list_runs(bundle)
    files = {
        SIGNER_FILE: canonical_json(signer_record(public)),
        BUNDLE_ENVELOPE_FILE: canonical_json(
            sign_envelope(MANIFEST_PAYLOAD_TYPE, canonical_json(manifest).encode("utf-8"), key)
        ),
    }
    for run_id in runs:
        body = (bundle / statement_name(run_id)).read_bytes()
        files[envelope_file(run_id)] = canonical_json(sign_envelope(INTOTO_PAYLOAD_TYPE, body, key))
    previous = [int(name[:4]) for name in signature_dirs(hashed) if name[:4].isdigit()]
    name = signature_dir_name(max(previous, default=0) + 1, public.keyid)
    _add_directory(bundle, f"{SIGNATURES}/{name}", files)
    return {
        "schema": "bundler.sign/2",
        "bundle": str(bundle),
        "bundle_id": report.bundle_id,
        "keyid": public.keyid,
        "signature": f"{SIGNATURES}/{name}",
        "runs": runs,
        "files_signed": len(manifest["files"]),
        "files": sorted(f"{SIGNATURES}/{name}/{leaf}" for leaf in files),
        "algorithm": public.algorithm,
        "model_signatures": model_signatures,
    }


def sign_adapters(bundle: Path, key_path: Path) -> list[str]:
    """Write an OMS model.sig beside each run's adapter/ that has none yet; return the paths written.

    Write-once, like a signature directory: a model.sig that exists is kept (an earlier signature
    covers its bytes, and ECDSA would make different ones), so signing again changes no file. All or
    none: a failed write (a full disk) removes what was written and restores the tag files.
    """
    missing = [
        run_id
        for run_id in list_runs(bundle)
        if (bundle / RUNS / run_id / ADAPTER_DIR).is_dir() and not (bundle / RUNS / run_id / MODEL_SIGNATURE).exists()
    ]
    signatures = {run_id: sign_adapter(bundle / RUNS / run_id / ADAPTER_DIR, key_path) for run_id in missing}
    tags = {p: p.read_bytes() for p in bundle.iterdir() if p.is_file()}  # bagit.txt, bag-info, manifests
    written: list[str] = []
    try:
        for run_id, data in signatures.items():
            written.append(f"{RUNS}/{run_id}/{MODEL_SIGNATURE}")
            record_run_file(bundle, run_id, MODEL_SIGNATURE, data)
    except OSError as exc:
        for rel in written:
            (bundle / rel).unlink(missing_ok=True)
        for path, data in tags.items():
            path.write_bytes(data)

        raise InputError(
            f"cannot write model.sig into {bundle}: {exc.strerror or exc}; nothing was added",
            "free space or fix permissions, then run `bundler sign` again",
        ) from None
    return written


def _add_directory(bundle: Path, rel: str, files: dict[str, str]) -> None:
    """Write `files` into a locked temp dir beside the bundle, then rename it to bundle/rel in one step."""
    final = bundle / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    # Named like atomic_dir's temp dirs (`.NAME.*.partial` beside the bundle) so remove_stale_partials finds it.
    tmp = Path(tempfile.mkdtemp(prefix=f".{bundle.name}.sign-", suffix=".partial", dir=bundle.parent))
    holder = os.open(tmp, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with interrupts_as_keyboard():
            for leaf, text in sorted(files.items()):
                with open(tmp / leaf, "xb") as handle:
                    handle.write(text.encode("utf-8"))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp / leaf, 0o644)
            os.chmod(tmp, 0o755)
            os.rename(tmp, final)
            directory = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    except BaseException as exc:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise InputError(
                f"cannot write the signature {rel} into {bundle}: {exc.strerror or exc}; nothing was added",
                "free space or fix permissions, then run `bundler sign` again",
            ) from None
        raise
    finally:
        os.close(holder)
