"""Warm `bundler build` of the quickstart in the container against the same build in the locked venv.

Run as root after .ci/setup (engine, registry and base image up): python3 bench/bench_runners.py [--repeat N]

The quickstart is copied into its own git repository. Each runner builds it once untimed (the venv is
installed, the image built), then N times timed, venv and docker interleaved, into fresh output
directories: the same bundle ID, so the docker runner reuses the bundle's image and the venv runner its
cached venv. A last row times the docker
runner after a one-value config edit (a new bundle ID: the recipe layer is rebuilt on cached dependency
layers). Times are wall seconds of the whole `bundler build` process, medians; the ratio is against the
venv's median measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}


def git(project: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(project), *args], check=True, capture_output=True, env={**os.environ, **GIT_ENV})


def build(project: Path, out: Path, runner: str) -> tuple[float, dict]:
    """One `bundler build`; return its wall time and the run's run.json."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    env.pop("BUNDLER_RUNNER", None)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bundler", "build", str(project), "--out", str(out), "--runner", runner],
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"build with --runner {runner} failed:\n{done.stderr[-3000:]}")
    (run_dir,) = (out / "data" / "runs").iterdir()
    return seconds, json.loads((run_dir / "run.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-runners-") as tmp:
        root = Path(tmp)
        project = root / "quickstart"
        shutil.copytree(REPO / "examples" / "quickstart", project, ignore=shutil.ignore_patterns("__pycache__"))
        git(project, "init", "-q", "-b", "main")
        git(project, "add", "-A")
        git(project, "commit", "-qm", "quickstart")
        times: dict[str, list[float]] = {"venv": [], "docker": []}
        made: dict[str, str] = {}
        for runner in times:
            first, _ = build(project, root / f"{runner}-first", runner)
            print(f"{runner}: first build {first:.1f} s (untimed warm-up)", file=sys.stderr)
        # Interleaved, so that load from other work on the machine falls on both runners alike.
        for index in range(args.repeat):
            for runner in times:
                seconds, run = build(project, root / f"{runner}-{index}", runner)
                times[runner].append(seconds)
                made[runner] = str((run.get("environment") or {}).get("image_build", "-"))
                print(f"{runner}: {seconds:.1f} s", file=sys.stderr)
        config = project / "bundle.toml"
        config.write_text(config.read_text().replace("seed = 1234", "seed = 1235", 1))
        git(project, "commit", "-qam", "another seed")
        edited, run = build(project, root / "docker-edited", "docker")
        made["edited"] = str(run["environment"].get("image_build"))
    base = statistics.median(times["venv"])
    rows = [
        ("venv, warm (baseline)", times["venv"], "cached venv"),
        ("docker, warm", times["docker"], f"image {made['docker']}"),
        ("docker, after a config edit (new bundle ID)", [edited], f"image {made['edited']}"),
    ]
    print("| case | median s | x venv | runs | image |\n|---|---:|---:|---:|---|")
    for name, values, note in rows:
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {median / base:.2f} | {len(values)} | {note} |")


if __name__ == "__main__":
    main()
