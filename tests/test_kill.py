"""Atomic writes under SIGKILL: a real `bundler build` killed at several points leaves no final directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bundler.bundle import bag as fmt
from bundler.bundle.verify import verify_bundle

# stderr lines of `bundler build` (ui.stage), in the order they appear; the build is killed when one shows.
KILL_POINTS = [
    "recording the code commit",
    "splitting the dataset",
    "sealed",
    "running the fine-tune",
    "step 8/",
]


def build_until(project: Path, out: Path, marker: str | None, after_seconds: float = 600.0) -> str:
    """Start a real build; SIGKILL it when `marker` appears on stderr (or after `after_seconds`); return stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bundler", "build", str(project), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert process.stderr is not None
    seen = []
    deadline = time.monotonic() + after_seconds
    try:
        for line in process.stderr:
            seen.append(line)
            if (marker and marker in line) or time.monotonic() > deadline:
                os.kill(process.pid, signal.SIGKILL)  # the build itself, not its children: the harsher case
                break
        process.wait(timeout=60)
    finally:
        try:  # then the orphaned runtime, so it does not outlive the test
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return "".join(seen)


@pytest.mark.slow
def test_a_build_killed_at_any_point_leaves_no_final_directory_and_a_rerun_succeeds(
    tmp_path: Path, quickstart: Path
) -> None:
    out = tmp_path / "outputs" / "bundle"
    for marker in KILL_POINTS:
        stderr = build_until(quickstart, out, marker)
        assert marker in stderr, f"the build ended before {marker!r}:\n{stderr[-2000:]}"
        assert not out.exists(), f"{out} exists after a kill at {marker!r}"
    stderr = build_until(quickstart, out, None, after_seconds=3.0)
    assert not out.exists()
    left = sorted(p.name for p in out.parent.iterdir() if p.name != ".bundle.lock")  # flock died with it
    assert left and all(name.startswith((".bundle.", "..bundle.")) and name.endswith(".partial") for name in left)

    rerun = subprocess.run(
        [sys.executable, "-m", "bundler", "build", str(quickstart), "--out", str(out)], capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert verify_bundle(out).ok and len(fmt.list_runs(out)) == 1
    # The rerun removed what the killed builds left beside the bundle.
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]


def test_partials_of_a_live_build_are_kept_and_a_killed_builds_are_removed(tmp_path: Path) -> None:
    from bundler.bundle.atomic import atomic_dir

    final = tmp_path / "bundle"
    dead = tmp_path / ".bundle.abc123.partial"
    dead_run = tmp_path / "..bundle.abc123.partial.run-x1.partial"
    other = tmp_path / ".other.abc.partial"
    for path in (dead, dead_run, other):
        (path / "data").mkdir(parents=True)
    with atomic_dir(final) as live:
        live_run = tmp_path / f".{live.name}.run-y2.partial"
        live_run.mkdir()
        assert fmt.remove_stale_partials(final) == sorted([dead_run, dead])
        assert live.is_dir() and live_run.is_dir() and other.is_dir()
        live_run.rmdir()
    assert final.is_dir() and not dead.exists()
