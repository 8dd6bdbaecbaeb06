"""Code packaging from git: commit, tree, dirty-tree policy, and a deterministic archive of the commit."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bundler.errors import SourceError


@dataclass(frozen=True)
class SourceRecord:
    """What source.json records about the code that was bundled."""

    repo: str
    commit: str
    tree: str
    path: str
    dirty: bool
    dirty_files: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "schema": "bundler.source/1",
            "repo": self.repo,
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


def describe_source(project: Path, allow_dirty: bool) -> tuple[SourceRecord, bytes, bytes | None]:
    """Return the source record, the archive of the commit and, for an allowed dirty tree, the patch."""
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
    record = SourceRecord(repo, commit, tree, rel, bool(dirty_files), dirty_files)
    patch = _dirty_patch(root, commit, spec) if dirty_files else None
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


def archive_commit(root: Path, commit: str, rel: str) -> bytes:
    """A tar of the commit's files under `rel`: sorted, mtime 0, uid/gid 0, no names; independent of git's version."""
    listing = _git_bytes(root, "ls-tree", "-r", "-z", "--full-tree", commit, *([rel] if rel else []))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries: list[tuple[str, str, str, str]] = []
        for entry in listing.split(b"\0"):
            if not entry:
                continue
            meta, raw_path = entry.split(b"\t", 1)
            mode, kind, obj = (field.decode() for field in meta.split())
            entries.append((raw_path.decode(), mode, kind, obj))
        for path, mode, kind, obj in sorted(entries):
            if kind != "blob":
                continue  # submodules (commits) are recorded by their pinned commit in the tree, not archived
            name = path[len(rel) + 1 :] if rel else path
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            data = _git_bytes(root, "cat-file", "blob", obj)
            if mode == "120000":
                info.type = tarfile.SYMTYPE
                info.linkname = data.decode()
                info.mode = 0o777
                tar.addfile(info)
            else:
                info.mode = 0o755 if mode == "100755" else 0o644
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
