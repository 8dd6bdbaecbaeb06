"""Benchmark `bundler compliance` on a finished bundle: the four documents vs `bundler verify` alone.

Run: python bench/bench_compliance.py BUNDLE [--repeat 5]
Both are timed as real command lines (process start-up included), best of --repeat; compliance verifies
the bundle first, so its time minus verify's is what generating the documents costs. The target
(issue 22): all four documents in under 2 s on the quickstart bundle.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def best_of(repeat: int, command: list[str], fresh_out: Path | None = None) -> float:
    times = []
    for _ in range(repeat):
        if fresh_out is not None:
            shutil.rmtree(fresh_out, ignore_errors=True)
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "docs"
        verify = best_of(args.repeat, [sys.executable, "-m", "bundler", "verify", str(args.bundle)])
        documents = best_of(
            args.repeat, [sys.executable, "-m", "bundler", "compliance", str(args.bundle), "--out", str(out)], out
        )
    print(f"{'command':<40} {'best s':>8} {'vs verify':>10}")
    print(f"{'bundler verify':<40} {verify:>8.3f} {1.0:>9.2f}x")
    print(f"{'bundler compliance (verify + 4 documents)':<40} {documents:>8.3f} {documents / verify:>9.2f}x")
    print(
        f"documents alone: {documents - verify:.3f} s; "
        f"target: compliance < 2 s -> {'met' if documents < 2 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
