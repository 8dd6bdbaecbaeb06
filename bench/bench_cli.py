"""Start-up and end-to-end timings for the foundation (issue 2), as a table.

    python bench/bench_cli.py [--repeat 5]

Measures, in one run on this machine: a bare interpreter start (the baseline), `bundler --help`,
`bundler verify` on a quickstart bundle, and `bundler build examples/quickstart` with a warm cache
(the locked venv and the tiny model already made). Targets: --help and verify < 0.5 s; build < 90 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(command: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm"
        subprocess.run(
            [py, "-m", "bundler", "build", "examples/quickstart", "--out", str(warm)],
            check=True,
            capture_output=True,
            cwd=REPO,
        )  # fills the venv and model caches
        rows = [("python -c pass (baseline)", timed([py, "-c", "pass"], args.repeat), None)]
        rows.append(("bundler --help", timed([py, "-m", "bundler", "--help"], args.repeat), 0.5))
        rows.append(
            ("bundler verify <quickstart bundle>", timed([py, "-m", "bundler", "verify", str(warm)], args.repeat), 0.5)
        )
        builds = []
        for index in range(3):
            start = time.perf_counter()
            subprocess.run(
                [py, "-m", "bundler", "build", "examples/quickstart", "--out", str(Path(tmp) / f"b{index}")],
                check=True,
                capture_output=True,
                cwd=REPO,
            )
            builds.append(time.perf_counter() - start)
        rows.append(("bundler build examples/quickstart (warm)", statistics.median(builds), 90.0))
    base = rows[0][1]
    print(f"{'command':<44} {'median s':>9} {'x baseline':>11} {'target s':>9} {'ok':>4}")
    for name, seconds, target in rows:
        ok = "" if target is None else ("yes" if seconds < target else "NO")
        print(f"{name:<44} {seconds:>9.3f} {seconds / base:>11.1f} {target if target else '':>9} {ok:>4}")


if __name__ == "__main__":
    main()
