"""Benchmark the tar fuzz target: executions per second and the coverage it reaches of the archive reader.

Run: python bench/bench_fuzz.py [--examples 2000] [--seed 0]
The target is the one tests/test_tarscan.py fuzzes with Hypothesis: a real export, mutated (byte flips,
cuts, hostile header fields, inserted blocks), then `verify X.tar` and `import` on it. Baseline in the same
run: the unmutated export through the same target. Coverage (coverage.py, line + branch) is measured over
bundler/bundle/tarscan.py and bundler/bundle/archive.py in a second pass, so tracing does not slow the
timed pass. The Hypothesis test itself (200 examples) is timed as CI runs it.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bundler.bundle.archive import export_bundle, import_bundle, verify_archive  # noqa: E402
from bundler.errors import BundlerError  # noqa: E402
from tests.test_archive import full_bundle  # noqa: E402
from tests.test_tarscan import mutate  # noqa: E402


def mutations(rng: random.Random) -> list[tuple[str, int, int]]:
    """The same mix the Hypothesis strategy draws from (tests/test_tarscan.py MUTATION)."""
    out = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["flip", "cut", "field", "pax", "insert"])
        if kind == "field":
            out.append((kind, rng.randint(0, 1 << 10), rng.choice([0, 100, 124, 136, 148, 156, 257, 345])))
        elif kind == "pax":
            out.append((kind, rng.randint(0, 1 << 10), rng.randint(0, 255)))
        elif kind == "insert":
            out.append((kind, rng.randint(0, 64), rng.randint(0, 255)))
        else:
            out.append((kind, rng.randint(0, 1 << 20), rng.randint(1, 255)))
    return out


def target(data: bytes, work: Path) -> str:
    """verify + import one archive; return the outcome class (ok, or the error's class name)."""
    (work / "x.tar").write_bytes(data)
    outcome = "ok"
    try:
        verify_archive(work / "x.tar")
        import_bundle(work / "x.tar", work / "out")
    except BundlerError as exc:
        outcome = type(exc).__name__
    shutil.rmtree(work / "out", ignore_errors=True)
    return outcome


def run(cases: list[bytes], work: Path) -> tuple[float, dict[str, int]]:
    outcomes: dict[str, int] = {}
    started = time.perf_counter()
    for data in cases:
        name = target(data, work)
        outcomes[name] = outcomes.get(name, 0) + 1
    return time.perf_counter() - started, outcomes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-fuzz-"))
    try:
        bundle = full_bundle(root / "bundle", root / "run")
        export_bundle(bundle, root / "b.tar")
        good = (root / "b.tar").read_bytes()
        rng = random.Random(args.seed)
        cases = [mutate(good, mutations(rng)) for _ in range(args.examples)]
        work = root / "work"
        work.mkdir()
        baseline, _ = run([good] * min(200, args.examples), work)
        baseline_rate = min(200, args.examples) / baseline
        elapsed, outcomes = run(cases, work)
        rate = args.examples / elapsed

        import coverage

        cov = coverage.Coverage(
            branch=True, include=[str(ROOT / "bundler/bundle/tarscan.py"), str(ROOT / "bundler/bundle/archive.py")]
        )
        cov.start()
        run(cases, work)
        cov.stop()
        percent = {}
        for module in ("tarscan.py", "archive.py"):
            path = str(ROOT / "bundler" / "bundle" / module)
            _, statements, _, missing, _ = cov.analysis2(path)
            percent[module] = 100 * (len(statements) - len(missing)) / len(statements)
        total = cov.report(file=open(os.devnull, "w"))

        started = time.perf_counter()
        test = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_tarscan.py", "-k", "fuzz"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        hypothesis_seconds = time.perf_counter() - started
        assert test.returncode == 0, test.stdout[-2000:]

        python = sys.version.split()[0]
        print(
            f"{len(good)}-byte export, {args.examples} cases, seed {args.seed}, {os.cpu_count()} cores, Python {python}"
        )
        hypothesis_rate = 200 / hypothesis_seconds
        print(f"{'what':<44} {'execs/s':>8} {'ratio':>6}")
        print(f"{'unmutated export (verify + import)':<44} {baseline_rate:>8.1f} {1.0:>6.2f}")
        print(f"{'mutated exports (verify + import)':<44} {rate:>8.1f} {rate / baseline_rate:>6.2f}")
        name = "Hypothesis test, 200 examples (pytest wall)"
        print(f"{name:<44} {hypothesis_rate:>8.1f} {hypothesis_rate / baseline_rate:>6.2f}")
        print("outcomes:", ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
        lines = f"tarscan.py {percent['tarscan.py']:.0f}%, archive.py {percent['archive.py']:.0f}%"
        print(f"coverage (line): {lines}; line+branch of both: {total:.0f}%")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
