"""Publish a run to the Hugging Face Hub: adapter, model.sig, card, loss image and bundle manifest, one commit.

Order matters: everything that can be checked locally (repo ID, run, adapter, card metadata,
token) is checked before the first request, and the Hub's own checks (token, YAML) before the
first upload. publish.json is written only after the commit succeeded.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.bundle.bag import open_bundle, record_run_file, resolve_run
from bundler.bundle.hashing import canonical_json, sha256_bytes
from bundler.bundle.scrub import find_secret
from bundler.errors import (
    CardMetadataError,
    HubAuthError,
    HubUnavailableError,
    InputError,
    InvalidRepoIdError,
    MissingAdapterError,
    SecretError,
)
from bundler.publish.card import is_local_path, parse_card, render_card, store_card

PUBLISH_SCHEMA = "bundler.publish/1"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
# Tag files of the bag itself; anything else in the tag area (outside data/) is provenance: pushed.
BAG_TAG_FILES = {"bagit.txt", "bag-info.txt", "tagmanifest-sha256.txt", "manifest-sha256.txt"}
# Pause before each retry of a commit the Hub answered with 5xx/429 or a dropped connection.
RETRY_DELAYS_S = (0.5, 2.0, 5.0)
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class PushFile:
    """One file of the commit: where it goes in the repo and its bytes."""

    path_in_repo: str
    data: bytes


def push_run(
    bundle_dir: Path,
    repo_id: str,
    *,
    run_id: str | None = None,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """Push a run's adapter and card to `repo_id`; write and return the publish record.

    The returned dict is the record plus `new_commit` (False when the Hub already held exactly these
    files, so no commit was made and `commit` is the branch head).
    """

    check_repo_id(repo_id)
    branch = revision or "main"
    open_bundle(bundle_dir)
    run_id = resolve_run(bundle_dir, run_id)
    run_dir = bundle_dir / "data" / "runs" / run_id
    check_adapter(run_dir)

    card = render_card(bundle_dir, run_id, repo_id=repo_id, strict=True)
    token = token or _token_now()
    if not token:
        raise HubAuthError("no Hub token: HF_TOKEN is not set and the credential store holds none", _endpoint())
    # The card goes into the bundle first, so the pushed manifest lists the pushed card's hashes.
    store_card(bundle_dir, run_id, card)
    files = collect_files(bundle_dir, run_id)
    parse_card(next(f.data for f in files if f.path_in_repo == "README.md").decode("utf-8"))

    with _xet_disabled():
        commit, new_commit, url = _upload(repo_id, branch, private, token, files, run_id)

    record = {
        "schema": PUBLISH_SCHEMA,
        "repo": repo_id,
        "revision": branch,
        "commit": commit,
        "url": url,
        "commit_url": f"{url}/commit/{commit}",
        "private": private,
        "files": {f.path_in_repo: sha256_bytes(f.data) for f in sorted(files, key=lambda f: f.path_in_repo)},
    }
    record_run_file(bundle_dir, run_id, "publish.json", canonical_json(record).encode("utf-8"))
    return {**record, "new_commit": new_commit}


def check_repo_id(repo_id: str) -> None:
    """Refuse anything but ORG/NAME as the Hub accepts it (huggingface_hub's own validator)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_id.count("/") != 1:
        raise InvalidRepoIdError(repo_id, "it must be ORG/NAME (one '/')")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise InvalidRepoIdError(repo_id, str(exc).split("\n")[0]) from None


def check_adapter(run_dir: Path) -> None:
    """The run has both adapter files, and its config names the base model by Hub ID, not a path."""
    import json

    missing = [f"adapter/{name}" for name in ADAPTER_FILES if not (run_dir / "adapter" / name).is_file()]
    if missing:
        raise MissingAdapterError(run_dir, missing)
    try:
        config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    except ValueError:
        raise InputError(
            f"run {run_dir.name[:12]}: adapter/adapter_config.json is not valid JSON",
            "the run's files were damaged; `bundler verify <bundle>` says which",
        ) from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if isinstance(base, str) and is_local_path(base):
        raise InputError(
            f"run {run_dir.name[:12]}: adapter_config.json names a local path as its base model "
            "(base_model_name_or_path); publishing it would put a local path on the Hub",
            "re-run the bundle with this bundler (its runtime records the model's Hub ID there)",
        )


def collect_files(bundle_dir: Path, run_id: str) -> list[PushFile]:
    """The commit's files: adapter at the repo root (where PeftModel.from_pretrained looks), card,
    loss image, and under bundle/ the payload manifest and the provenance files of the tag area."""

    run_dir = bundle_dir / "data" / "runs" / run_id
    files = [PushFile(p.name, p.read_bytes()) for p in sorted((run_dir / "adapter").iterdir()) if p.is_file()]
    # model.sig (an OMS signature over the adapter) goes next to the adapter files it signs.
    for name in ("README.md", "loss.png", "model.sig"):
        if (run_dir / name).is_file():
            files.append(PushFile(name, (run_dir / name).read_bytes()))
    files.append(PushFile("bundle/manifest-sha256.txt", _manifest_without_push_records(bundle_dir)))
    for path in sorted(bundle_dir.rglob("*")):
        rel = path.relative_to(bundle_dir).as_posix()
        if path.is_file() and not rel.startswith("data/") and rel not in BAG_TAG_FILES:
            files.append(PushFile(f"bundle/{rel}", path.read_bytes()))
    for f in files:
        if f.path_in_repo.endswith((".json", ".md", ".txt", ".jsonl")):
            kind = find_secret(f.data.decode("utf-8", errors="replace"))
            if kind:
                raise SecretError(f"{f.path_in_repo} (to be pushed)", kind)
    return files


def _manifest_without_push_records(bundle_dir: Path) -> bytes:
    """The payload manifest minus publish.json lines: a push record cannot be part of what it
    pushed, and leaving it out keeps a re-push of an unchanged run identical (no new commit)."""
    lines = (bundle_dir / "manifest-sha256.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(line for line in lines if not line.rstrip("\n").endswith("/publish.json")).encode("utf-8")


def _upload(
    repo_id: str, branch: str, private: bool, token: str, files: list[PushFile], run_id: str
) -> tuple[str, bool, str]:
    """whoami, validate the card, create repo (and branch), commit; return (oid, new?, repo url)."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    endpoint = _endpoint()
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.whoami()
    except HfHubHTTPError as exc:
        if _status(exc) in (401, 403):
            raise HubAuthError(f"the Hub refused the token (HTTP {_status(exc)})", endpoint) from None
        raise HubUnavailableError(endpoint, 1, _short(exc)) from None
    except _transport_errors() + (OfflineModeIsEnabled,) as exc:
        # No retry: nothing was sent yet; an unreachable endpoint is usually a wrong HF_ENDPOINT.
        raise HubUnavailableError(endpoint, 1, f"{type(exc).__name__}: {exc}") from None
    _validate_yaml(endpoint, token, next(f.data for f in files if f.path_in_repo == "README.md"))

    def attempt() -> tuple[str, bool, str]:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True, repo_type="model")
        head_before = api.model_info(repo_id, revision=branch).sha
        operations = [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=f.data) for f in files]
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=f"bundler: publish run {run_id[:12]}",
            commit_description=f"Run {run_id} of a bundler run bundle; README.md has its lineage.",
            revision=branch,
            repo_type="model",
        )
        return info.oid, info.oid != head_before, str(repo_url).rstrip("/")

    for number, delay in enumerate((*RETRY_DELAYS_S, None), start=1):
        try:
            return attempt()
        except HfHubHTTPError as exc:
            status = _status(exc)
            if status in (401, 403):
                raise HubAuthError(f"the Hub refused the token for {repo_id} (HTTP {status})", endpoint) from None
            if status not in RETRYABLE_STATUS or delay is None:
                raise HubUnavailableError(endpoint, number, _short(exc)) from None
        except _transport_errors() as exc:
            if delay is None:
                raise HubUnavailableError(endpoint, number, f"{type(exc).__name__}: {exc}") from None
        time.sleep(delay)
    raise AssertionError("unreachable")


def _validate_yaml(endpoint: str, token: str, readme: bytes) -> None:
    """Ask the Hub to validate the card's metadata before any upload (as create_commit does)."""
    from huggingface_hub.utils import build_hf_headers, get_session

    response = get_session().post(
        f"{endpoint}/api/validate-yaml",
        json={"content": readme.decode("utf-8"), "repoType": "model"},
        headers=build_hf_headers(token=token),
    )
    if response.status_code == 400:
        try:
            errors = [e.get("message", "") for e in response.json().get("errors", [])]
        except ValueError:
            errors = [response.text[:200]]
        raise CardMetadataError(errors or ["the Hub refused the card's metadata"])
    if response.status_code in (401, 403):
        raise HubAuthError(f"the Hub refused the token (HTTP {response.status_code})", endpoint)


def _token_now() -> str | None:
    """HF_TOKEN, else the Hub credential store, read at the moment of use and never kept."""
    from huggingface_hub import get_token

    return get_token()


def _endpoint() -> str:
    """HF_ENDPOINT as it is now: huggingface_hub reads it once at import, which may be too early."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


@contextlib.contextmanager
def _xet_disabled() -> Iterator[None]:
    """Upload through the LFS protocol, never Xet.

    huggingface_hub reads HF_HUB_DISABLE_XET into constants at import and checks the constant at
    each upload (utils/_runtime.is_xet_available), so the constant is what must change.
    """
    from huggingface_hub import constants

    saved_constant, saved_env = constants.HF_HUB_DISABLE_XET, os.environ.get("HF_HUB_DISABLE_XET")
    constants.HF_HUB_DISABLE_XET = True
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET = saved_constant
        if saved_env is None:
            os.environ.pop("HF_HUB_DISABLE_XET", None)
        else:
            os.environ["HF_HUB_DISABLE_XET"] = saved_env


def _transport_errors() -> tuple[type[BaseException], ...]:
    try:
        import httpx2 as httpx  # the HTTP client huggingface_hub 2.x ships with
    except ImportError:  # huggingface_hub < 2 uses httpx or requests
        try:
            import httpx  # type: ignore[no-redef]
        except ImportError:
            return (ConnectionError, TimeoutError)
    return (httpx.TransportError, ConnectionError, TimeoutError)


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _short(exc: Exception) -> str:
    """First line of a Hub error (status and server message); tokens never appear in these."""
    return str(exc).split("\n")[0][:300]
