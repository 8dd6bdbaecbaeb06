"""Code packaging from git: commit, tree, dirty-tree policy, and a deterministic archive of the commit."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit, urlunsplit

from bundler.errors import SourceError


@dataclass(frozen=True)
class SourceRecord:
    """What source.json records about the code that was bundled, and where it came from (not in source.json)."""

    repo: str  # origin URL, credentials stripped: recorded in bag-info.txt, outside the bundle ID
    commit: str
    tree: str
    path: str
    dirty: bool
    dirty_files: tuple[str, ...]
    branch: str = ""  # outside the ID too: the same commit on another branch gives the same result

    def as_dict(self) -> dict[str, object]:
        """source.json: what determines the result (the ID covers it); the origin and branch are left out."""
        return {
            "schema": "bundler.source/1",
            "commit": self.commit,
            "tree": self.tree,
            "path": self.path,
            "dirty": self.dirty,
            "dirty_files": list(self.dirty_files),
        }


def _git(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["git", "-C", str(root), *args],
        capture_output=True,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        raise SourceError(f"git {' '.join(args[:2])} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode()


def _git_bytes(root: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True).stdout


def strip_credentials(url: str) -> str:
    """Remove user:password@ from a URL (and tokens in its query); keep everything else."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", parts.fragment))


def repo_root(path: Path) -> Path:
    result = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if result.returncode != 0:
        raise SourceError(
            f"{path} is not inside a git repository; the bundle must record the code commit",
            "run `git init && git add -A && git commit -m init` in the project, then build again",
        )
    return Path(result.stdout.strip())


def origin_info(record: SourceRecord) -> dict[str, str]:
    """bag-info.txt labels for where the code came from (tag files: outside the bundle ID)."""
    return {k: v for k, v in {"Source-Origin": record.repo, "Source-Branch": record.branch}.items() if v}


def describe_source(
    project: Path, allow_dirty: bool, archive_to: Path | None = None
) -> tuple[SourceRecord, bytes, bytes | None]:
    """Return the source record, the archive of the commit and, for an allowed dirty tree, the patch.

    With `archive_to`, the archive is streamed into that file instead (and b"" returned): a large
    repository is never held in memory.
    """
    project = project.resolve()
    root = repo_root(project)
    rel = project.relative_to(root).as_posix()
    rel = "" if rel == "." else rel
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        raise SourceError(f"{root} has no commit yet", "commit the project first: `git add -A && git commit`")
    commit = head.stdout.strip()
    spec = rel or "."
    tree = (
        _git(root, "rev-parse", f"{commit}:{rel}").strip()
        if rel
        else _git(root, "rev-parse", f"{commit}^{{tree}}").strip()
    )
    _refuse_unpinned_submodules(root, spec)
    status = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", spec)
    dirty_files = tuple(sorted({entry[3:] for entry in status.split("\0") if len(entry) > 3}))
    if dirty_files and not allow_dirty:
        shown = ", ".join(dirty_files[:8]) + (f" and {len(dirty_files) - 8} more" if len(dirty_files) > 8 else "")
        raise SourceError(
            f"the working tree has uncommitted changes: {shown}",
            "commit them, or pass --allow-dirty to record them as a patch (the bundle is then marked dirty)",
        )
    remote = subprocess.run(["git", "-C", str(root), "remote", "get-url", "origin"], capture_output=True, text=True)
    repo = strip_credentials(remote.stdout.strip()) if remote.returncode == 0 else ""
    head_ref = ["git", "-C", str(root), "symbolic-ref", "-q", "--short", "HEAD"]
    branch = subprocess.run(head_ref, capture_output=True, text=True)
    record = SourceRecord(repo, commit, tree, rel, bool(dirty_files), dirty_files, branch.stdout.strip())
    patch = _dirty_patch(root, commit, spec) if dirty_files else None
    if archive_to is not None:
        with archive_to.open("wb") as stream:
            archive_commit(root, commit, rel, stream)
        return record, b"", patch
    return record, archive_commit(root, commit, rel), patch


def _refuse_unpinned_submodules(root: Path, spec: str) -> None:
    out = subprocess.run(["git", "-C", str(root), "submodule", "status", "--", spec], capture_output=True, text=True)
    bad = [line[1:].split()[1] for line in out.stdout.splitlines() if line[:1] in "+-U"]
    if bad:
        raise SourceError(
            f"submodule(s) not at their recorded commit: {', '.join(bad)}",
            "run `git submodule update --init` or commit the submodule's new commit",
        )


def _dirty_patch(root: Path, commit: str, spec: str) -> bytes:
    """A binary patch from the commit to the working tree, untracked files included, index untouched."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(root, "read-tree", commit, env=env)
        _git(root, "add", "-A", "--", spec, env=env)
        return subprocess.run(
            ["git", "-C", str(root), "diff", "--cached", "--binary", "--no-color", commit, "--", spec],
            capture_output=True,
            check=True,
            env={**os.environ, **env},
        ).stdout


def archive_commit(root: Path, commit: str, rel: str, out: BinaryIO | None = None) -> bytes:
    """A tar of the commit's files under `rel`: sorted, mtime 0, uid/gid 0, no names; independent of git's version.

    Blobs stream from one `git cat-file --batch` into the tar (into `out` when given, and b"" returned),
    so no file is ever held whole in memory.
    """
    listing = _git_bytes(root, "ls-tree", "-r", "-z", "--full-tree", commit, *([rel] if rel else []))
    entries: list[tuple[str, str, str, str]] = []
    for entry in listing.split(b"\0"):
        if not entry:
            continue
        meta, raw_path = entry.split(b"\t", 1)
        mode, kind, obj = (field.decode() for field in meta.split())
        entries.append((raw_path.decode("utf-8", "surrogateescape"), mode, kind, obj))
    buffer = io.BytesIO() if out is None else out
    command = ["git", "-C", str(root), "cat-file", "--batch"]
    batch = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert batch.stdin is not None and batch.stdout is not None
    try:
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path, mode, kind, obj in sorted(entries):
                if kind != "blob":
                    continue  # submodules (commits) are recorded by their pinned commit in the tree, not archived
                info = tarfile.TarInfo(path[len(rel) + 1 :] if rel else path)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                batch.stdin.write(obj.encode() + b"\n")
                batch.stdin.flush()
                header = batch.stdout.readline().split()
                if len(header) != 3 or header[1] != b"blob":
                    raise SourceError(f"git cat-file could not read {path} ({obj}) from {root}")
                info.size = int(header[2])
                if mode == "120000":
                    info.type = tarfile.SYMTYPE
                    info.linkname = batch.stdout.read(info.size).decode("utf-8", "surrogateescape")
                    info.size = 0
                    info.mode = 0o777
                    tar.addfile(info)
                else:
                    info.mode = 0o755 if mode == "100755" else 0o644
                    tar.addfile(info, batch.stdout)  # copies exactly info.size bytes from the pipe
                batch.stdout.read(1)  # the newline after each object
    except BaseException:
        batch.kill()  # git may be blocked writing to a pipe nobody reads any more (e.g. the disk filled up)
        raise
    finally:
        with contextlib.suppress(BrokenPipeError):
            batch.stdin.close()
        batch.wait()
    return buffer.getvalue() if out is None else b""  # type: ignore[union-attr]
