"""OpenSSF Model Signing (OMS) signatures over a run's adapter: data/runs/<run-id>/model.sig.

Made and checked with the `model-signing` library, so anyone verifies the adapter without bundler:
`model_signing verify key ADAPTER_DIR --signature model.sig --public_key key.pub`. The signature is a
Sigstore bundle holding a DSSE envelope over an in-toto statement that lists every file of the adapter
directory with its sha256; only EC keys (P-256/384/521) can make one.

How it relates to the rest of the bundle:
- What it signs is exactly `adapter/`. model.sig sits beside it in the run directory, so it is not in the
  signed directory; on the Hub the adapter files sit at the repo root next to the card, the loss image,
  bundle/ and model.sig itself, so those names are recorded as ignored paths in the signed manifest and
  the same plain command verifies a Hub download.
- It is a run annotation (bag.RUN_ANNOTATIONS): written after the run, outside the run ID, so signing
  never changes a run ID or the bundle ID.
- It is written once, by the first `bundler sign` with an EC key, before that sign adds its signature
  directory, so that signature (which covers every file) covers it; later signs keep its bytes (ECDSA
  would make new ones), so no earlier signature is invalidated. Like the card it stays out of the run's
  statement (attest.PUBLISH_REWRITTEN). `bundler verify --key` on a directory checks it with OMS.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bundler.bundle.finding import Finding
from bundler.bundle.signing import PASSWORD_ENV, PublicKey

MODEL_SIGNATURE = "model.sig"
ADAPTER_DIR = "adapter"
# Files that sit next to the adapter in a published Hub repo but are not the model (publish/push.py's
# layout); ".cache" is where huggingface_hub keeps download metadata inside a local_dir.
NOT_MODEL = (MODEL_SIGNATURE, "README.md", "loss.png", "bundle", ".cache")
_MISSING = "missing: the adapter has no OpenSSF Model Signing signature"
_NO_EC_KEY = "cannot be checked: OpenSSF Model Signing needs an EC public key among --key"


def can_sign_models(public: PublicKey) -> bool:
    """True for the key types OMS signs with (EC P-256/384/521); ed25519 cannot make a model.sig."""
    return public.algorithm != "ed25519"


def sign_adapter(adapter_dir: Path, key_path: Path) -> bytes:
    """Return an OMS signature (Sigstore bundle JSON) over every file of `adapter_dir`, by the EC key at `key_path`."""
    from model_signing import hashing, signing

    password = os.environ.get(PASSWORD_ENV)
    with tempfile.TemporaryDirectory(prefix="bundler-oms-") as work:
        out = Path(work) / MODEL_SIGNATURE
        config = signing.Config().use_elliptic_key_signer(private_key=key_path, password=password)
        config.set_hashing_config(hashing.Config().set_ignored_paths(paths=list(NOT_MODEL), ignore_git_paths=True))
        config.sign(adapter_dir, out)
        return out.read_bytes()


def verify_adapter(model_dir: Path, signature: Path, key: PublicKey) -> str | None:
    """Check an OMS signature over `model_dir` with `key`; return why it fails, or None when it holds."""
    from model_signing import verifying

    with tempfile.TemporaryDirectory(prefix="bundler-oms-") as work:
        public = Path(work) / "key.pub"
        public.write_text(key.pem, encoding="ascii")
        try:
            verifying.Config().use_elliptic_key_verifier(public_key=public).verify(model_dir, signature)
        except Exception as exc:  # noqa: BLE001 - model_signing raises ValueError and library errors alike
            return _first_line(exc)
    return None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().split("\n")[0] or type(exc).__name__
    return text[:300]


def model_signature_findings(bundle: Path, keys: list[PublicKey]) -> list[Finding]:
    """Every run's model.sig must verify its adapter/ with one of `keys` (findings of kind "signature")."""
    from bundler.bundle.bag import RUNS

    ec_keys = [k for k in keys if can_sign_models(k)]
    findings = []
    runs = bundle / RUNS
    for run in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
        signature, adapter = run / MODEL_SIGNATURE, run / ADAPTER_DIR
        rel = f"{RUNS}/{run.name}/{MODEL_SIGNATURE}"
        if not signature.is_file():
            if ec_keys and adapter.is_dir():
                findings.append(Finding("signature", rel, _MISSING))
            continue
        if not ec_keys:
            findings.append(Finding("signature", rel, _NO_EC_KEY))
            continue
        problems = [verify_adapter(adapter, signature, key) for key in ec_keys]
        if all(problems):
            shown = ", ".join(k.keyid[:23] for k in ec_keys)
            detail = f"not a valid signature of {ADAPTER_DIR}/ by a trusted key ({shown}): {problems[0]}"
            findings.append(Finding("signature", rel, detail))
    return findings
