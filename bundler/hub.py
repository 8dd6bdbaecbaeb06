"""Reading from the Hub: resolve a revision to a commit, pin each file's sha256, download into a checked cache.

Everything the Hub says is checked against something it cannot change later: a base model against
the sha256 values `bundler lock` wrote into model.lock.json, a dataset file against the Hub's own
file metadata (an LFS file's oid is its sha256; a regular file's blob id is its git sha1).

The endpoint and token are read at the moment of each call: huggingface_hub reads HF_ENDPOINT once,
at import, which may be before a test or a wrapper script sets it. The token is never stored.

Cache: <BUNDLER_CACHE or ~/.cache/bundler>/hub/<models|datasets>/<org>--<name>/<commit>/<files>,
written through a temporary directory renamed into place only once every file has matched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bundler.errors import (
    EnvironmentSetupError,
    HubAccessError,
    HubFileMismatchError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
    InputError,
)
from bundler.paths import cache_dir

REPO_TYPES = ("model", "dataset")
_DOWNLOAD_FAILURES: tuple[type[BaseException], ...] = (OSError,)
_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class HubFile:
    """One file of a repo at a commit, as the Hub's file metadata describes it."""

    path: str
    size: int | None
    blob_id: str | None  # git blob sha1: of the content (regular file) or of the LFS pointer
    lfs_sha256: str | None  # the LFS oid, which is the sha256 of the content

    @property
    def is_lfs(self) -> bool:
        return self.lfs_sha256 is not None


@dataclass(frozen=True)
class HubRevision:
    """A repo pinned to one commit, with the metadata of every file in it."""

    repo_id: str
    repo_type: str
    revision: str  # as asked: a branch, a tag or a commit sha
    commit: str
    files: dict[str, HubFile]


def endpoint() -> str:
    """HF_ENDPOINT as it is now (huggingface_hub's own constant is frozen at its import)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def token() -> str | None:
    """HF_TOKEN, else the Hub's credential store, read now and never kept."""
    from huggingface_hub import get_token

    return get_token()


def resolve_revision(repo_id: str, repo_type: str, revision: str) -> HubRevision:
    """Ask the Hub which commit `revision` names and what each file there is (size, blob id, LFS sha256)."""
    from huggingface_hub import HfApi

    where = endpoint()
    api = HfApi(endpoint=where, token=token())
    with _hub_errors(repo_id, repo_type, revision, where):
        info = api.repo_info(repo_id, repo_type=repo_type, revision=revision, files_metadata=True)
    files = {}
    for sibling in getattr(info, "siblings", None) or []:
        lfs = sibling.lfs
        files[sibling.rfilename] = HubFile(
            sibling.rfilename, sibling.size, sibling.blob_id, lfs.sha256 if lfs is not None else None
        )
    if not info.sha:
        raise EnvironmentSetupError(
            f"{where}: the Hub named no commit for {repo_type} {repo_id}@{revision}",
            "check HF_ENDPOINT points at a Hub (or a mirror speaking its API)",
        )
    return HubRevision(repo_id, repo_type, revision, info.sha, dict(sorted(files.items())))


def pinned_sha256(pinned: HubRevision, paths: Iterable[str]) -> dict[str, str]:
    """Return each file's sha256: the LFS oid from the metadata, or (small regular files) hash a download."""
    wanted = sorted(paths)
    found = {p: pinned.files[p].lfs_sha256 for p in wanted if pinned.files[p].is_lfs}
    regular = [p for p in wanted if p not in found]
    if regular:
        with tempfile.TemporaryDirectory(prefix="bundler-hub-") as tmp:
            staged = _download(pinned, regular, Path(tmp))
            mismatches = []
            for path in regular:
                sha256, sha1 = file_hashes(staged / path)
                expected = pinned.files[path].blob_id
                if expected and sha1 != expected:
                    mismatches.append((path, f"git {expected}", f"git {sha1}"))
                found[path] = sha256
            if mismatches:
                raise HubFileMismatchError(pinned.repo_id, pinned.commit, mismatches)
    return {p: found[p] for p in wanted}  # type: ignore[misc]


def snapshot_dir(repo_id: str, repo_type: str, commit: str) -> Path:
    """Where the files of repo_id at commit live in bundler's cache."""

    return cache_dir() / "hub" / f"{repo_type}s" / repo_id.replace("/", "--") / commit


def fetch_files(
    pinned: HubRevision, paths: Iterable[str], expected: Mapping[str, str] | None = None
) -> tuple[Path, dict[str, str]]:
    """Download `paths` at the pinned commit into the cache; return the snapshot directory and their sha256.

    With `expected` ({path: sha256}, e.g. from model.lock.json) every file must match it; without,
    every file must match the Hub's metadata for it (LFS sha256, else git blob sha1). A mismatch
    removes the download and raises HubFileMismatchError; nothing unchecked is ever left in the cache.
    """
    paths = sorted(paths)
    final = snapshot_dir(pinned.repo_id, pinned.repo_type, pinned.commit)
    if final.is_dir():
        found = _check(pinned, final, paths, expected, missing_ok=True)
        if found is not None:
            return final, found
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{pinned.commit[:12]}-", suffix=".partial", dir=final.parent))
    try:
        staged = _download(pinned, paths, work / "download")
        snapshot = work / "snapshot"
        for path in paths:
            (snapshot / path).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged / path, snapshot / path)
        found = _check(pinned, snapshot, paths, expected, missing_ok=False)
        assert found is not None
        if final.exists():  # a cached copy that no longer matched: set it aside, never trust it
            os.rename(final, work / "stale")
        try:
            os.rename(snapshot, final)
        except OSError:  # another build put a copy there meanwhile; use it if it checks out
            again = _check(pinned, final, paths, expected, missing_ok=False)
            assert again is not None
            return final, again
        return final, found
    finally:
        shutil.rmtree(work, ignore_errors=True)


def verify_files(directory: Path, expected: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """Return (path, expected, found) for every file under `directory` whose sha256 differs or is missing."""
    hashes = _hash_many(directory, list(expected))
    problems = []
    for path, sha in sorted(expected.items()):
        pair = hashes[path]
        found = pair[0] if pair is not None else "missing"
        if found != sha:
            problems.append((path, sha, found))
    return problems


def file_hashes(path: Path) -> tuple[str, str]:
    """Return (sha256, git blob sha1) of a file in one read."""
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            sha256.update(chunk)
            sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest()


def _hash_many(directory: Path, paths: list[str]) -> dict[str, tuple[str, str] | None]:
    """Hash files in parallel threads (hashlib releases the GIL): {path: (sha256, git sha1), or None if missing}."""
    from concurrent.futures import ThreadPoolExecutor

    def one(path: str) -> tuple[str, str] | None:
        local = directory / path
        return file_hashes(local) if local.is_file() else None

    with ThreadPoolExecutor(max_workers=max(1, min(len(paths), os.cpu_count() or 2))) as pool:
        return dict(zip(paths, pool.map(one, paths), strict=True))


def _is_safe_path(path: str) -> bool:
    """A relative POSIX path with no empty, '.' or '..' part: it stays inside the snapshot directory."""
    return "\\" not in path and all(part not in ("", ".", "..") for part in path.split("/"))


def _check(
    pinned: HubRevision, directory: Path, paths: list[str], expected: Mapping[str, str] | None, *, missing_ok: bool
) -> dict[str, str] | None:
    """Return {path: sha256} when every file matches; None when one is missing and that is allowed."""
    found: dict[str, str] = {}
    mismatches = []
    hashes = _hash_many(directory, paths)
    for path in paths:
        if hashes[path] is None:
            if missing_ok:
                return None
            mismatches.append((path, "a file", "missing"))
            continue
        sha256, sha1 = hashes[path]  # type: ignore[misc]
        found[path] = sha256
        meta = pinned.files.get(path)
        if expected is not None:
            if sha256 != expected[path]:
                mismatches.append((path, expected[path], sha256))
        elif meta is not None and meta.is_lfs:
            if sha256 != meta.lfs_sha256:
                mismatches.append((path, meta.lfs_sha256 or "", sha256))
        elif meta is not None and meta.blob_id and sha1 != meta.blob_id:
            mismatches.append((path, f"git {meta.blob_id}", f"git {sha1}"))
    if mismatches:
        if missing_ok:  # a cached copy: re-download rather than fail on a damaged cache
            return None
        raise HubFileMismatchError(pinned.repo_id, pinned.commit, mismatches)
    return found


def _download(pinned: HubRevision, paths: list[str], into: Path) -> Path:
    """Download each path at the pinned commit into `into` (huggingface_hub's local-dir layout)."""
    from concurrent.futures import ThreadPoolExecutor

    from huggingface_hub import hf_hub_download

    where, secret = endpoint(), token()
    unsafe = [p for p in paths if not _is_safe_path(p)]
    if unsafe:  # a server (or a proxy) naming files outside the snapshot: never write them
        raise InputError(
            f"{where}: {pinned.repo_type} {pinned.repo_id}@{pinned.commit[:12]} lists unsafe file names: "
            + ", ".join(repr(p) for p in unsafe[:5]),
            "nothing was downloaded; check HF_ENDPOINT points at the Hub or a mirror you trust",
        )
    into.mkdir(parents=True, exist_ok=True)

    def one(path: str) -> None:
        with _hub_errors(pinned.repo_id, pinned.repo_type, pinned.commit, where, path):
            hf_hub_download(
                pinned.repo_id,
                path,
                repo_type=pinned.repo_type,
                revision=pinned.commit,
                local_dir=into,
                endpoint=where,
                token=secret,
            )

    # Several at once, as snapshot_download does (8 threads): sharded weights download in parallel.
    with _quiet_bars(), ThreadPoolExecutor(max_workers=max(1, min(len(paths), 8))) as pool:
        list(pool.map(one, paths))
    return into


@contextlib.contextmanager
def _quiet_bars() -> Iterator[None]:
    """No download bars when stderr is not a person's terminal."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet = not sys.stderr.isatty() and not are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        yield
    finally:
        if quiet:
            enable_progress_bars()


@contextlib.contextmanager
def _hub_errors(repo_id: str, repo_type: str, revision: str, where: str, path: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into bundler's errors (exit 2 for what the user can fix)."""
    from huggingface_hub import errors

    try:
        yield
    except errors.RevisionNotFoundError:
        raise HubRevisionNotFoundError(repo_id, repo_type, revision, where) from None
    except errors.GatedRepoError:
        raise HubAccessError(repo_id, repo_type, where, "the repo is gated: accept its conditions on the Hub") from None
    except errors.RepositoryNotFoundError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403) and token() is not None:
            raise HubAccessError(repo_id, repo_type, where, f"the Hub refused the token (HTTP {status})") from None
        raise HubRepoNotFoundError(repo_id, repo_type, where, has_token=token() is not None) from None
    except errors.RemoteEntryNotFoundError:
        raise HubFileMismatchError(repo_id, revision, [(path or "?", "a file", "missing on the Hub")]) from None
    except errors.HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        if status in (401, 403):
            raise HubAccessError(repo_id, repo_type, where, f"the Hub refused the request (HTTP {status})") from None
        raise EnvironmentSetupError(
            f"{where}: the Hub failed on {repo_type} {repo_id}@{revision}: {str(exc).splitlines()[0][:300]}",
            "try again later, or check HF_ENDPOINT",
        ) from None
    except _DOWNLOAD_FAILURES + _transport_errors() as exc:  # no connection (LocalEntryNotFoundError too), full disk
        detail = (str(exc).strip().splitlines() or [""])[0][:300]
        raise EnvironmentSetupError(
            f"{where}: cannot download {repo_type} {repo_id}@{revision}: {type(exc).__name__}: {detail}",
            "check the network and HF_ENDPOINT; a build needs the Hub once, later runs use the cache",
        ) from None


def _transport_errors() -> tuple[type[BaseException], ...]:
    try:
        import httpx2  # the HTTP client huggingface_hub 2.x ships with
    except ImportError:
        return ()
    return (httpx2.TransportError,)
