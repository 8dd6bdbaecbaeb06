"""What the Hub would refuse in a model card, and what must never reach one (paths, secrets)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bundler.bundle.scrub import find_secret
from bundler.errors import CardMetadataError, SecretError

# Anything that looks like a local filesystem path: absolute POSIX, home-relative, Windows, file://.
LOCAL_PATH = re.compile(r"(?:^|[\s\"'=(])(?:/(?!/)[^\s|]*|~[/\\]|[A-Za-z]:[\\/]|file://|\.\.?/)")


def is_local_path(text: str) -> bool:
    """True when `text` holds something that looks like a local filesystem path."""
    return bool(LOCAL_PATH.search(text))


def parse_card(text: str, *, strict: bool = True) -> Any:
    """Parse the card with huggingface_hub (its own metadata checks), or CardMetadataError."""
    from huggingface_hub import ModelCard

    try:
        card = ModelCard(text)
    except (ValueError, TypeError) as exc:
        raise CardMetadataError([str(exc)]) from None
    problems = metadata_problems(card.data.to_dict()) if strict else []
    if problems:
        raise CardMetadataError(problems)
    return card


def metadata_problems(metadata: dict[str, Any], only: str | None = None) -> list[str]:
    """What the Hub would refuse in the metadata that huggingface_hub's parser lets through."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if only is not None:
        return [p for p in metadata_problems(metadata) if p.startswith(only)]
    problems = []
    base = metadata.get("base_model")
    if not base:
        problems.append("base_model is not recorded (model.json has no 'id')")
    for value in base if isinstance(base, list) else [base] if base else []:
        try:
            validate_repo_id(value)
            if LOCAL_PATH.search(value) or value.count("/") != 1:
                raise HFValidationError("not ORG/NAME")
        except HFValidationError:
            problems.append(f"base_model must be a Hub model ID (ORG/NAME), not {value!r}")
    if metadata.get("library_name") != "peft":
        problems.append("library_name must be 'peft'")
    license_id = metadata.get("license")
    if not isinstance(license_id, str) or not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", license_id):
        problems.append(f"license must be a Hub license identifier such as 'apache-2.0', not {license_id!r}")
    for dataset in metadata.get("datasets") or []:
        try:
            validate_repo_id(dataset)
        except HFValidationError:
            problems.append(f"datasets entries must be Hub dataset IDs, not {dataset!r}")
    return problems


def refuse_leaks(text: str, bundle_dir: Path) -> None:
    """A card is public: refuse one that carries a secret or the bundle's own location."""

    kind = find_secret(text)
    if kind:
        raise SecretError("the model card", kind)
    for where in {str(bundle_dir), str(bundle_dir.resolve()), str(Path.home())} - {"/", "."}:
        if where in text:
            raise SecretError("the model card", f"local path {where}")
