"""What a user or the machine can get wrong ends in exit 2 with a message and a next step, never an internal error.

Disk full and read-only use real tmpfs mounts (root only: CI runs as root, elsewhere they skip), a
permission error uses an immutable directory (chattr +i refuses even root), and every case asserts that
nothing is left under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import QUICKSTART, git, make_git_project, run_cli


def assert_clean_failure(result: subprocess.CompletedProcess[str], out: Path, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert "hint:" in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert not out.exists() or (out.is_dir() and not any(out.iterdir()))
    if out.parent.is_dir():
        leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
        assert leftovers == [], leftovers


@contextlib.contextmanager
def tmpfs(target: Path, options: str) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


# ---------------------------------------------------------------- the machine


def test_a_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path: Path, quickstart: Path) -> None:
    with tmpfs(tmp_path / "small", "size=192k") as small:
        out = small / "bundle"
        result = run_cli("build", str(quickstart), "--out", str(out), "--no-run")
        assert_clean_failure(result, out, "No space left on device (ENOSPC)", "free space")
        assert list(small.iterdir()) == []


def test_a_read_only_out_is_a_clear_error(tmp_path: Path, quickstart: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=1m") as read_only:
        out = read_only / "bundle"
        result = run_cli("build", str(quickstart), "--out", str(out), "--no-run")
        assert_clean_failure(result, out, "Read-only file system (EROFS)", "choose a writable --out")


def test_a_permission_error_is_a_clear_error(tmp_path: Path, quickstart: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        out = locked / "bundle"
        result = run_cli("build", str(quickstart), "--out", str(out), "--no-run")
        assert_clean_failure(result, out, "(EPERM)", "check the permissions")
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=False)


# ---------------------------------------------------------------- --out


def test_an_out_that_is_a_file_or_sits_under_one_is_refused(tmp_path: Path, quickstart: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    result = run_cli("build", str(quickstart), "--out", str(blocker / "deeper" / "bundle"), "--no-run")
    assert result.returncode == 2 and f"{blocker} is a file, not a directory" in result.stderr
    result = run_cli("build", str(quickstart), "--out", str(blocker), "--no-run")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert blocker.read_text() == "not a directory\n"


def test_a_second_build_into_the_same_out_stops_at_once_naming_the_first(tmp_path: Path, quickstart: Path) -> None:
    out = tmp_path / "bundle"
    first = subprocess.Popen(
        [sys.executable, "-m", "bundler", "build", str(quickstart), "--out", str(out), "--no-run", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert first.stderr is not None
    for line in first.stderr:  # the first holds the lock once it starts recording the code
        if "checking requirements.lock" in line:
            break
    started = time.monotonic()
    second = run_cli("build", str(quickstart), "--out", str(out), "--no-run")
    assert time.monotonic() - started < 20
    assert second.returncode == 2, second.stderr
    assert f"another build is writing to {out} (bundler build, pid {first.pid}" in second.stderr
    stdout, _ = first.communicate(timeout=300)
    assert first.returncode == 0
    assert json.loads(stdout)["bundle"] == str(out)
    assert not (tmp_path / ".bundle.lock").exists()


# ---------------------------------------------------------------- text that is not UTF-8


def test_a_bundle_toml_that_is_not_utf8_names_the_line_and_byte(tmp_path: Path, quickstart: Path) -> None:
    config = quickstart / "bundle.toml"
    data = config.read_bytes()
    lines = data.split(b"\n")
    lines[2] = b"# caf\xe9 (latin-1)"
    config.write_bytes(b"\n".join(lines))
    offset = len(lines[0]) + len(lines[1]) + 2 + len(b"# caf")
    result = run_cli("build", str(quickstart), "--out", str(tmp_path / "b"), "--no-run")
    assert_clean_failure(result, tmp_path / "b", f"bundle.toml is not UTF-8: line 3, byte offset {offset} (0xe9)")


def test_a_dataset_that_is_not_utf8_names_the_file_line_and_byte(tmp_path: Path) -> None:
    project = make_git_project(QUICKSTART, tmp_path / "p")
    data = project / "data" / "reviews.jsonl"
    rows = data.read_bytes().split(b"\n")
    rows[4] = rows[4].replace(b'"prompt": "', b'"prompt": "\xff', 1)
    data.write_bytes(b"\n".join(rows))
    git(project, "commit", "-qam", "latin-1 row")
    offset = sum(len(r) + 1 for r in rows[:4]) + rows[4].index(b"\xff")
    result = run_cli("build", str(project), "--out", str(tmp_path / "b"), "--no-run")
    assert_clean_failure(result, tmp_path / "b", f"reviews.jsonl is not UTF-8: line 5, byte offset {offset} (0xff)")
    result = run_cli("split", str(project), "--out", str(tmp_path / "splits.json"))  # the same for `split`
    assert result.returncode == 2 and "line 5" in result.stderr and "internal error" not in result.stderr


# ---------------------------------------------------------------- symlinks


def test_a_dataset_linked_from_outside_is_vendored_from_its_target(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "reviews-v2.jsonl").write_bytes((QUICKSTART / "data" / "reviews.jsonl").read_bytes())
    project = tmp_path / "p"
    make_git_project(QUICKSTART, project)
    # a namesake beside the link's target name that must never be vendored instead
    (project / "data" / "reviews-v2.jsonl").write_text('{"id": "decoy", "prompt": "x", "response": "y"}\n')
    (project / "data" / "train.jsonl").symlink_to(shared / "reviews-v2.jsonl")
    config = project / "bundle.toml"
    config.write_text(config.read_text().replace('path = "data/reviews.jsonl"', 'path = "data/train.jsonl"'))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "link the data")
    out = tmp_path / "b"
    result = run_cli("build", str(project), "--out", str(out), "--no-run")
    assert result.returncode == 0, result.stderr
    dataset = json.loads((out / "data" / "recipe" / "dataset.json").read_text())
    assert dataset["source"] == "data/train.jsonl" and list(dataset["files"]) == ["train.jsonl"]
    vendored = out / "data" / "vendor" / "dataset" / "train.jsonl"
    assert vendored.read_bytes() == (shared / "reviews-v2.jsonl").read_bytes()
    assert str(tmp_path) not in (out / "data" / "recipe" / "dataset.json").read_text()


def test_a_broken_dataset_link_is_named_with_its_target(tmp_path: Path, quickstart: Path) -> None:
    (quickstart / "data" / "gone.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    config = quickstart / "bundle.toml"
    config.write_text(config.read_text().replace('path = "data/reviews.jsonl"', 'path = "data/gone.jsonl"'))
    git(quickstart, "add", "-A")
    git(quickstart, "commit", "-qm", "broken link")
    result = run_cli("build", str(quickstart), "--out", str(tmp_path / "b"), "--no-run")
    assert_clean_failure(result, tmp_path / "b", "gone.jsonl is a symlink to", "nowhere.jsonl, which does not exist")


# ---------------------------------------------------------------- signals end the runtime child


def _children_running(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"runtime" in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_the_build_ends_the_runtime_child_and_leaves_nothing(
    tmp_path: Path, quickstart: Path, signum: int, code: int
) -> None:
    out = tmp_path / "outputs" / "bundle"
    build = subprocess.Popen(
        [sys.executable, "-m", "bundler", "build", str(quickstart), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    children: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while not children and time.monotonic() < deadline and build.poll() is None:
            time.sleep(0.2)
            children = _children_running(build.pid)
        assert children, "the runtime child never started"
        time.sleep(2)  # into training
        build.send_signal(signum)
        _, stderr = build.communicate(timeout=60)
        assert build.returncode == code, stderr
        assert "nothing was written under the final name" in stderr
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in children), "the runtime child outlived the build"
        assert not out.exists()
        assert [p.name for p in out.parent.iterdir()] == []
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if build.poll() is None:
            build.kill()
