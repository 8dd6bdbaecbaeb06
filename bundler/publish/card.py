"""The model card of a run: huggingface_hub ModelCard with lineage read from the bundle alone.

The card reads only bundle files (recipe, run outputs, bag-info.txt), never the project, so it can
be written for any bundle, including older ones that lack some files: a missing value reads
"not recorded". Nothing that could be a local path or a secret reaches the card; `render_card`
checks the finished text before returning it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.bundle.atomic import atomic_write_bytes
from bundler.bundle.bag import SIGNATURES, read_json_object, record_run_file
from bundler.errors import CardMetadataError, InputError
from bundler.paths import render_template
from bundler.publish.cardfacts import (
    EVAL_METRICS,
    NOT_RECORDED,
    BundleFacts,
    cell,
    code,
    hub_dataset,
    public,
)
from bundler.publish.cardmeta import is_local_path, metadata_problems, parse_card, refuse_leaks
from bundler.publish.plots import render_loss_png

__all__ = ["NOT_RECORDED", "RenderedCard", "is_local_path", "parse_card", "render_card", "store_card", "write_card"]

TEMPLATE = "modelcard.md.j2"
TAGS = ["lora", "reproducible", "bundler"]


@dataclass(frozen=True)
class RenderedCard:
    """README.md text and the loss image (None when the run recorded no loss)."""

    text: str
    loss_png: bytes | None
    metadata: dict[str, Any]


def write_card(bundle_dir: Path, run_id: str, *, repo_id: str | None = None) -> Path:
    """Write data/runs/<run-id>/README.md and loss.png; return the README path.

    When the bundle is sealed (has a payload manifest), the files go through
    `bundle.record_run_file`, so `bundler verify` stays green; they are run annotations and never
    change the run ID.
    """
    card = render_card(bundle_dir, run_id, repo_id=repo_id)
    return store_card(bundle_dir, run_id, card)


def store_card(bundle_dir: Path, run_id: str, card: RenderedCard) -> Path:
    """Write a rendered card into the run directory (skipping files whose bytes are unchanged)."""
    run_dir = bundle_dir / "data" / "runs" / run_id
    files = {"README.md": card.text.encode("utf-8")}
    if card.loss_png is not None:
        files["loss.png"] = card.loss_png
    for name, data in files.items():
        target = run_dir / name
        if target.is_file() and target.read_bytes() == data:
            continue
        _record(bundle_dir, run_id, name, data)
    return run_dir / "README.md"


def _record(bundle_dir: Path, run_id: str, name: str, data: bytes) -> None:
    if (bundle_dir / "manifest-sha256.txt").is_file():
        record_run_file(bundle_dir, run_id, name, data)
    else:
        atomic_write_bytes(bundle_dir / "data" / "runs" / run_id / name, data)


def render_card(bundle_dir: Path, run_id: str, *, repo_id: str | None = None, strict: bool = False) -> RenderedCard:
    """Build the card text from the bundle's files.

    Not strict (writing a card into a bundle): a missing or unusable value reads "not recorded" and
    is left out of the metadata. Strict (before a push): any metadata the Hub would refuse, or a
    missing base model, raises CardMetadataError.
    """
    from huggingface_hub import EvalResult, ModelCardData

    run_dir = bundle_dir / "data" / "runs" / run_id
    if not run_dir.is_dir():
        raise InputError(
            f"run {run_id} does not exist in {bundle_dir}",
            "`bundler inspect <bundle>` lists the runs",
        )
    facts = BundleFacts.read(bundle_dir, run_dir)
    project = facts.recipe.value("project.name") or "adapter"
    base_model = facts.model.get("id")
    dataset_hub_id = hub_dataset(facts.dataset)
    license_id = facts.recipe.value("publish.license") or "other"
    if strict:
        problems = metadata_problems(
            {
                "base_model": base_model,
                "license": license_id,
                "library_name": "peft",
                "datasets": [dataset_hub_id] if dataset_hub_id else [],
            }
        )
        if problems:
            raise CardMetadataError(problems)
    else:
        base_model = base_model if not metadata_problems({"base_model": base_model}, only="base_model") else None
        license_id = license_id if not metadata_problems({"license": license_id}, only="license") else "other"
        dataset_hub_id = (
            dataset_hub_id if not metadata_problems({"datasets": [dataset_hub_id]}, only="datasets") else None
        )
    load_repo = repo_id or facts.recipe.value("publish.repo") or "ORG/NAME"

    eval_results = [
        EvalResult(
            task_type="text-generation",
            task_name="Text generation",
            dataset_type=dataset_hub_id or "custom",
            dataset_name=dataset_hub_id or f"{project} ({split} split)",
            dataset_split=split,
            metric_type=metric,
            metric_name=name,
            metric_value=float(value),
        )
        for key, split, metric, name in EVAL_METRICS
        if isinstance(value := facts.results.get("eval", {}).get(key), (int, float))
    ]
    try:
        card_data = ModelCardData(
            base_model=base_model,
            library_name="peft",
            license=license_id,
            tags=TAGS,
            datasets=[dataset_hub_id] if dataset_hub_id else None,
            model_name=(repo_id or project).split("/")[-1],
            eval_results=eval_results or None,
            pipeline_tag="text-generation",
        )
    except ValueError as exc:
        raise CardMetadataError([str(exc)]) from None

    loss_png = render_loss_png(facts.metrics)
    name = load_repo.split("/")[-1] if repo_id else project
    link = f"[{public(base_model)}](https://huggingface.co/{public(base_model)})"
    values = {
        "card_data": card_data.to_yaml(),
        "title": f"{name}: LoRA adapter for {public(base_model)}",
        "summary": (
            f"A LoRA adapter for {link}, fine-tuned with "
            "[bundler](https://pypi.org/project/bundler-repro/) from a content-hashed run "
            "bundle that pins the environment, code, data splits and seeds."
        ),
        "lineage": facts.lineage(run_id) + provenance_rows(bundle_dir, run_id),
        "hyperparameters": facts.hyperparameters(),
        "determinism": facts.determinism(),
        "hardware": facts.hardware(),
        "splits": facts.splits_table(),
        "evals": [(r.metric_name, f"{r.metric_value:.6g}") for r in eval_results],
        "before_after": facts.before_after(),
        "loss_image": "loss.png" if loss_png is not None else None,
        "quantization": facts.quantization(),
        "load_repo": public(load_repo),
        "base_model": public(base_model),
        "base_revision": public(facts.model.get("revision")),
        "verify_command": "bundler verify <bundle>",
        "model_signature_key": model_signature_key(bundle_dir, run_id),
        "replay_command": f"bundler replay <bundle> --run {run_id}" + check_lines(facts, run_id, repo_id),
    }
    text = render_template(TEMPLATE, **values)
    card = parse_card(text, strict=strict)
    final = str(card)
    refuse_leaks(final, bundle_dir)
    return RenderedCard(final, loss_png, card.data.to_dict())


def provenance_rows(bundle_dir: Path, run_id: str) -> list[tuple[str, str]]:
    """Lineage rows linking the run's signed in-toto statement in the newest signature (`bundler sign`).

    `bundler push` uploads the tag area under bundle/, so the link resolves in the Hub repo. A signature
    covers every file of the bundle at signing time, this card included (bundler.bundle.attest).
    """
    # deferred: it loads cryptography, which writing a card for an unsigned bundle should not pay for
    from bundler.bundle.attest import SIGNER_FILE, envelope_file, signature_dirs

    root = bundle_dir / SIGNATURES
    names = signature_dirs([f"{SIGNATURES}/{p.name}/x" for p in root.iterdir()]) if root.is_dir() else []
    signed = [n for n in names if (root / n / envelope_file(run_id)).is_file()]
    if not signed:
        return []
    envelope = f"{SIGNATURES}/{signed[-1]}/{envelope_file(run_id)}"
    keyid = read_json_object(root / signed[-1] / SIGNER_FILE).get("keyid")
    algorithm = read_json_object(root / signed[-1] / SIGNER_FILE).get("algorithm", "ed25519")
    link = f"[bundle/{envelope}](bundle/{envelope})"
    return [
        ("Signed provenance", cell(f"{link} (in-toto SLSA v1 statement, DSSE {algorithm})")),
        ("Signing key", cell(code(keyid))),
        ("Signature covers", cell("every file of the bundle when it was signed, this card included")),
    ]


def model_signature_key(bundle_dir: Path, run_id: str) -> str | None:
    """The key ID that made the run's model.sig (OpenSSF Model Signing, issue 21), or None when unsigned.

    model.sig is written once, by the first `bundler sign` with an EC key: the oldest EC signature's key.
    """
    # deferred: it loads cryptography, which writing a card for an unsigned bundle should not pay for
    from bundler.bundle.attest import SIGNER_FILE, signature_dirs

    root = bundle_dir / SIGNATURES
    if not (bundle_dir / "data" / "runs" / run_id / "model.sig").is_file() or not root.is_dir():
        return None
    for name in signature_dirs([f"{SIGNATURES}/{p.name}/x" for p in root.iterdir()]):
        signer = read_json_object(root / name / SIGNER_FILE)
        if str(signer.get("algorithm", "")).startswith("ecdsa-") and signer.get("keyid"):
            return str(signer["keyid"])
    return None


# --- replay section: `bundler check` (check.py, issue 12) ---
def check_lines(facts: BundleFacts, run_id: str, repo_id: str | None) -> str:
    """Lines after the replay command: the inference-level check and the reference file's sha256.

    They ride in the replay code block so the template needs no new value; an older run without
    reference outputs gets none.
    """
    sha = facts.results.get("reference_outputs_sha256")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        return ""
    lines = [
        f"# no retraining: inference on the test split, compared with reference_outputs.jsonl (sha256 {sha})",
        f"bundler check <bundle> --run {run_id}",
    ]
    if repo_id:
        lines.append(f"bundler check <bundle> --run {run_id} --adapter {public(repo_id)}")
    return "\n" + "\n".join(lines)
