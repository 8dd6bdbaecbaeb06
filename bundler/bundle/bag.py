"""The bundle FORMAT (bundler/1): BagIt layout, identity, manifests, runs and verification.

This module knows nothing of how a recipe is made; every reader of finished bundles depends on it alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bundler import __version__
from bundler.bundle.atomic import atomic_write_text, is_held
from bundler.bundle.hashing import decode_path, hash_tree, list_files, manifest_lines, sha256_bytes, sha256_file
from bundler.errors import InputError, NotABundleError, SecretError

BUNDLE_FORMAT = "bundler/1"
SUPPORTED_FORMATS = (BUNDLE_FORMAT,)
PAYLOAD = "data"
RECIPE = "data/recipe"
RUNS = "data/runs"
VENDOR = "data/vendor"
MANIFEST = "manifest-sha256.txt"
TAGMANIFEST = "tagmanifest-sha256.txt"
# Each signature is a directory added whole; its files are checked by the signature itself and stay out of
# the tag manifest, so adding a signature changes no other file (bundler.bundle.attest).
SIGNATURES = "provenance/signatures"
BAGIT_TXT = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
# Files bundler adds to a run after the runtime finished; they describe the run but are not its output,
# so they stay out of the run ID (the card names the run ID, which would otherwise be circular).
# model.sig (bundle/oms.py) is one too: an OMS signature over adapter/, made by `bundler sign`.
RUN_ANNOTATIONS = frozenset({"run.json", "README.md", "loss.png", "publish.json", "model.sig"})
_MANIFEST_LINE = re.compile(r"^([0-9a-f]{64})[ \t]+(\S.*)$")


def recipe_id(recipe_hashes: Mapping[str, str]) -> str:
    """Return the bundle ID: sha256 over the sorted manifest lines of data/recipe/ alone."""
    lines = {p: s for p, s in recipe_hashes.items() if p.startswith(RECIPE + "/")}
    return sha256_bytes(manifest_lines(lines).encode())


def run_id_for(bundle_id: str, output_hashes: Mapping[str, str]) -> str:
    """Return the run ID: sha256 of the bundle ID and the runtime's output manifest (run-relative paths)."""
    body = f"bundle {bundle_id}\n" + manifest_lines(output_hashes)
    return sha256_bytes(body.encode())


def run_outputs(payload: Mapping[str, str], run_dir_name: str) -> dict[str, str]:
    """{run-relative path: sha256} of what the runtime wrote in a run directory: what its run ID covers."""
    prefix = f"{RUNS}/{run_dir_name}/"
    files = {p[len(prefix) :]: s for p, s in payload.items() if p.startswith(prefix)}
    return {rel: s for rel, s in files.items() if rel not in RUN_ANNOTATIONS}


def parse_manifest(text: str, source: str) -> dict[str, str]:
    """Parse "<sha256>  <path>" lines (paths percent-decoded); a malformed line is an input error naming its number."""
    hashes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _MANIFEST_LINE.match(line)
        if not match:
            raise InputError(
                f"{source} line {number} is not '<sha256>  <path>': {line[:80]!r}",
                "the manifest was damaged; restore the bundle from its archive",
            )
        hashes[decode_path(match.group(2))] = match.group(1)
    return hashes


def read_json_object(path: Path) -> dict[str, Any]:
    """A bundle's JSON record, or {} when it is absent or unreadable (readers must cope with older bundles)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_bag_info(bundle: Path) -> dict[str, str]:
    path = bundle / "bag-info.txt"
    return parse_bag_info(path.read_text(encoding="utf-8")) if path.is_file() else {}


def parse_bag_info(text: str) -> dict[str, str]:
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def open_bundle(path: Path) -> Path:
    """Check that `path` is a bundle of a known format and return it."""
    if not path.exists():
        raise NotABundleError(path, "no such directory")
    if not path.is_dir():
        raise NotABundleError(path, "not a directory (use `bundler import` for an exported .tar)")
    if not (path / "bagit.txt").is_file() or not (path / "bag-info.txt").is_file():
        raise NotABundleError(path, "bagit.txt or bag-info.txt is missing")
    fmt = read_bag_info(path).get("Bundle-Format")
    if fmt not in SUPPORTED_FORMATS:
        raise NotABundleError(path, f"unknown Bundle-Format {fmt!r}; this bundler reads {', '.join(SUPPORTED_FORMATS)}")
    return path


def bundle_id_of(bundle: Path) -> str:
    return read_bag_info(bundle).get("Bundle-Id", "")


def payload_hashes(bundle: Path) -> dict[str, str]:
    return parse_manifest((bundle / MANIFEST).read_text(encoding="utf-8"), MANIFEST)


def write_tags(bundle: Path, payload: Mapping[str, str], extra_info: Mapping[str, str] | None = None) -> str:
    """(Re)write every tag file from the payload hashes; return the bundle ID."""
    bundle_id = recipe_id(payload)
    atomic_write_text(bundle / "bagit.txt", BAGIT_TXT)
    atomic_write_text(bundle / MANIFEST, manifest_lines(payload))
    octets = sum((bundle / p).stat().st_size for p in payload)
    info = dict(read_bag_info(bundle))
    info.update(extra_info or {})
    info.update(
        {
            "Bag-Software-Agent": f"bundler {__version__}",
            "Bundle-Format": BUNDLE_FORMAT,
            "Bundle-Id": bundle_id,
            "External-Identifier": f"bundler:{bundle_id}",
            "Payload-Oxum": f"{octets}.{len(payload)}",
        }
    )
    atomic_write_text(bundle / "bag-info.txt", "".join(f"{k}: {info[k]}\n" for k in sorted(info)))
    tags = {
        p.relative_to(bundle).as_posix(): sha256_file(p)
        for p in list_files(bundle)
        if not p.relative_to(bundle).as_posix().startswith((PAYLOAD + "/", SIGNATURES + "/")) and p.name != TAGMANIFEST
    }
    atomic_write_text(bundle / TAGMANIFEST, manifest_lines(tags))
    return bundle_id


def seal_bundle(bundle: Path) -> str:
    """Hash the payload under data/ and write the bag's tag files; return the bundle ID.

    A recipe holding a secret (a known token shape, or the value of a secret environment variable seen
    here) is refused: the recipe is the user's input and is never silently rewritten.
    """
    from bundler.bundle.scrub import refuse_secrets

    if (bundle / RECIPE).is_dir():
        refuse_secrets(bundle / RECIPE, label=RECIPE)
    payload = hash_tree(bundle / PAYLOAD, prefix=PAYLOAD + "/")
    return write_tags(bundle, payload)


def list_runs(bundle: Path) -> list[str]:
    """Run IDs recorded in the bundle, oldest first (by run.json's finished time, then ID)."""
    runs_dir = bundle / RUNS
    if not runs_dir.is_dir():
        return []
    runs = [p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def finished(run: Path) -> str:
        return str(read_json_object(run / "run.json").get("finished", ""))

    return [p.name for p in sorted(runs, key=lambda r: (finished(r), r.name))]


def resolve_run(bundle: Path, run_id: str | None) -> str:
    """Return the run ID asked for (a unique prefix is enough), or the latest run."""
    runs = list_runs(bundle)
    if not runs:
        raise InputError(f"{bundle} has no recorded run", "run it first: `bundler run <bundle>`")
    if run_id is None:
        return runs[-1]
    matches = [r for r in runs if r.startswith(run_id)]
    if len(matches) != 1:
        known = ", ".join(r[:12] for r in runs)
        raise InputError(
            f"run {run_id!r} {'is ambiguous' if matches else 'does not exist'} in {bundle}", f"recorded runs: {known}"
        )
    return matches[0]


def add_run(bundle: Path, staged_outputs: Path, annotations: Mapping[str, bytes] | None = None) -> str:
    """Move a finished run's outputs into data/runs/<run-id>/ and extend the manifests; return the run ID.

    The run ID covers what the runtime wrote; `annotations` (run.json, ...) are added beside it.
    """
    from bundler.bundle.scrub import scrub_text, scrub_tree, secret_values

    secrets = secret_values()
    # Run records (env.json, logs, metrics) are captured, not authored: secrets are redacted, not refused.
    scrub_tree(staged_outputs, secrets)
    outputs = hash_tree(staged_outputs)
    run_id = run_id_for(bundle_id_of(bundle), outputs)
    for name, data in (annotations or {}).items():
        (staged_outputs / name).write_bytes(scrub_text(data.decode("utf-8"), secrets).encode("utf-8"))
    final = bundle / RUNS / run_id
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        # The same outputs again (a bit-identical rerun): keep the first record.
        shutil.rmtree(staged_outputs)
    else:
        os.rename(staged_outputs, final)
    payload = payload_hashes(bundle)
    payload.update(hash_tree(final, prefix=f"{RUNS}/{run_id}/"))
    write_tags(bundle, payload)
    return run_id


def record_run_file(bundle: Path, run_id: str, name: str, data: bytes) -> Path:
    """Write (or replace) one annotation file in a run and update the manifests."""
    run_dir = bundle / RUNS / run_id
    if not run_dir.is_dir():
        raise InputError(f"run {run_id} does not exist in {bundle}")
    target = run_dir / name
    from bundler.bundle.atomic import atomic_write_bytes
    from bundler.bundle.scrub import find_secret_bytes, secret_values

    kind = find_secret_bytes(data, secret_values(), as_text=True)
    if kind:
        raise SecretError(f"{target.relative_to(bundle).as_posix()} (to be written)", kind)

    atomic_write_bytes(target, data)
    payload = payload_hashes(bundle)
    payload[target.relative_to(bundle).as_posix()] = sha256_bytes(data)
    write_tags(bundle, payload)
    return target


def reseal_run(bundle: Path, run_id: str) -> None:
    """Re-hash one run directory into the manifests (after annotation files were written into it)."""
    from bundler.bundle.scrub import scrub_tree

    run_dir = bundle / RUNS / run_id
    prefix = f"{RUNS}/{run_id}/"
    scrub_tree(run_dir)
    payload = {p: s for p, s in payload_hashes(bundle).items() if not p.startswith(prefix)}
    payload.update(hash_tree(run_dir, prefix=prefix))
    write_tags(bundle, payload)


def _owner_is_held(candidate: Path) -> bool:
    """A run's staging dir (`..NAME.x.partial.run-y.partial`) belongs to a build whose own dir may be held."""
    if not candidate.name.startswith(".."):
        return False
    owner = candidate.name[1:].split(".run-")[0]
    return is_held(candidate.parent / owner)


def remove_stale_partials(final: Path) -> list[Path]:
    """Remove temp dirs a killed build left beside `final` (`.NAME.*.partial`).

    atomic_dir and the runners' staging dirs use these names; a build killed by SIGKILL cannot clean up after
    itself. A live build holds an flock on its dir (atomic_dir), so its dir and its run's staging dir are kept.
    """
    if not final.parent.is_dir():
        return []
    removed = []
    # `..NAME.*.partial`: a run's staging dir beside a build's own temp dir (runners.staging_dir).
    candidates = [*final.parent.glob(f".{final.name}.*.partial"), *final.parent.glob(f"..{final.name}.*.partial")]
    for candidate in candidates:
        try:
            if (
                candidate.is_dir()
                and not candidate.is_symlink()
                and not is_held(candidate)
                and not _owner_is_held(candidate)
            ):
                shutil.rmtree(candidate)
                removed.append(candidate)
        except OSError:
            continue
    return sorted(removed)
