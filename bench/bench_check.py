"""How long `bundler check` takes next to the training it spares: quickstart at two training lengths.

    python bench/bench_check.py [--steps 40,400] [--repeats 3] [--runner venv]

For each length: one `bundler build` (venv runner), then `bundler check --json` REPEATS times on the
run's own adapter. Prints medians: the training loop (results.json train_seconds), the whole run
(run.json wall_seconds: interpreter, imports, model load, training, reference outputs), the whole
check (verify, interpreter, imports, model load, inference, compare) and its inference alone.
The baseline (training) is measured in the same invocation, on the same machine.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import QUICKSTART, make_git_project  # noqa: E402


def cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "bundler", *args], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bundler {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", default="40,400")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runner", default="venv", choices=["venv", "host"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-check-"))
    rows = []
    try:
        for steps in [int(s) for s in args.steps.split(",")]:
            project = work / f"src-{steps}"
            shutil.copytree(QUICKSTART, project, ignore=shutil.ignore_patterns("__pycache__", "out"))
            toml = project / "bundle.toml"
            toml.write_text(re.sub(r"(?m)^max_steps = \d+", f"max_steps = {steps}", toml.read_text()))
            project = make_git_project(project, work / f"quickstart-{steps}")
            bundle = work / f"bundle-{steps}"
            run_id = json.loads(cli("build", str(project), "--out", str(bundle), "--json"))["run_id"]
            run_dir = bundle / "data" / "runs" / run_id
            train = json.loads((run_dir / "results.json").read_text())["train_seconds"]
            run_wall = json.loads((run_dir / "run.json").read_text())["wall_seconds"]
            reports = [
                json.loads(
                    cli(
                        "check",
                        str(bundle),
                        "--json",
                        "--runner",
                        args.runner,
                        *(["--allow-drift"] if args.runner == "host" else []),
                    )
                )
                for _ in range(args.repeats)
            ]
            check = statistics.median(r["seconds"]["check"] for r in reports)
            inference = statistics.median(r["seconds"]["inference"] for r in reports)
            rows.append((steps, train, run_wall, check, inference, reports[0]["verdict"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"bundler check vs training, quickstart (tiny Llama, CPU), runner {args.runner}, "
        f"median of {args.repeats} checks"
    )
    print(
        "| steps | train loop s | whole run s | check s | check inference s | check/run | check/train loop "
        "| inference/train loop | verdict |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for steps, train, run_wall, check, inference, verdict in rows:
        print(
            f"| {steps} | {train:.2f} | {run_wall:.2f} | {check:.2f} | {inference:.2f} | {check / run_wall:.2f} "
            f"| {check / train:.2f} | {inference / train:.3f} | {verdict} |"
        )


if __name__ == "__main__":
    main()
