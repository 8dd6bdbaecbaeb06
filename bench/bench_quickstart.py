"""How long the real quickstart's warm build takes, and what it learns: base vs adapter on the test split.

    python bench/bench_quickstart.py [--repeats 3] [--runner venv]

One cold-or-warm build first (venv install and GGUF conversion, cached per lock), then REPEATS warm
`bundler build examples/quickstart` runs from a committed copy of the example, each into a fresh
directory. Prints per build: wall seconds of the whole command, the training loop (results.json
train_seconds), the run's wall seconds (run.json), the machine's 1-minute load average before it
started, and the base model's and the adapter's test accuracy (same label scoring) and validation loss.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import REAL_QUICKSTART, make_git_project  # noqa: E402


def build(project: Path, out: Path, runner: str) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "bundler", "build", str(project), "--out", str(out), "--runner", runner],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"bundler build failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runner", default="venv")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-quickstart-"))
    try:
        project = make_git_project(REAL_QUICKSTART, root / "quickstart")
        first = build(project, root / "first", args.runner)
        print(f"first build (may install the venv and convert the GGUF file once): {first:.1f} s")
        print("| build | wall s | train loop s | run s | load avg | base acc | adapter acc | base val loss | val loss |")  # noqa: E501
        print("|---|---|---|---|---|---|---|---|---|")
        walls = []
        for index in range(args.repeats):
            load = os.getloadavg()[0]
            out = root / f"warm{index}"
            wall = build(project, out, args.runner)
            walls.append(wall)
            [run] = sorted((out / "data" / "runs").iterdir())
            results = json.loads((run / "results.json").read_text())
            record = json.loads((run / "run.json").read_text())
            ev = results["eval"]
            print(
                f"| warm {index + 1} | {wall:.1f} | {results['train_seconds']:.1f} | {record['wall_seconds']:.1f} "
                f"| {load:.2f} | {ev['base']['accuracy']:.4f} | {ev['accuracy']:.4f} "
                f"| {ev['base']['val_loss']:.4f} | {ev['val_loss']:.4f} |"
            )
        print(f"median warm build: {statistics.median(walls):.1f} s on {os.cpu_count()} CPU(s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
