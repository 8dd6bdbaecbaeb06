"""Start-up of the commands that must stay light, before and after a change, in one run (issue 17).

    python bench/bench_startup.py --before /tmp/orig [--repeat 15]

`--before` is another checkout (e.g. `git worktree add /tmp/orig 175866e`); this checkout is "after".
Each command runs with the checkout on PYTHONPATH, before and after interleaved so machine load hits
both alike. Measured: a bare interpreter (the baseline), `bundler --help`, and `bundler verify` on a
quickstart bundle written with --no-run (the same bundle for both). The last column says whether the
command imported torch (it must not).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROBE = "import runpy, sys; sys.argv = ['bundler', *sys.argv[1:]]; "
PROBE += 'exec(\'try:\\n runpy.run_module("bundler", run_name="__main__")\\nexcept SystemExit: pass\'); '
PROBE += "sys.stderr.write('TORCH=%d' % ('torch' in sys.modules))"


def run(code: Path | None, args: list[str]) -> tuple[float, bool]:
    env = {**os.environ, "NO_COLOR": "1"}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    command = [sys.executable, "-c", PROBE, *args] if args else [sys.executable, "-c", "pass"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    return time.perf_counter() - start, "TORCH=1" in done.stderr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bundler",
                "build",
                str(REPO / "examples" / "quickstart"),
                "--out",
                str(bundle),
                "--no-run",
            ],
            check=True,
            capture_output=True,
            cwd=REPO,
        )
        cases = [
            ("python -c pass (baseline)", []),
            ("bundler --help", ["--help"]),
            ("bundler verify <quickstart bundle>", ["verify", str(bundle)]),
        ]
        times: dict[tuple[str, str], list[float]] = {}
        torch: dict[tuple[str, str], bool] = {}
        for _ in range(args.repeat):
            for name, argv in cases:
                for side, code in (("before", args.before.resolve()), ("after", REPO)):
                    seconds, loaded = run(code if argv else None, argv)
                    times.setdefault((name, side), []).append(seconds)
                    torch[(name, side)] = torch.get((name, side), False) or loaded
    base = statistics.median(times[(cases[0][0], "after")] + times[(cases[0][0], "before")])
    print(f"{'command':<36} {'before s':>9} {'after s':>9} {'after/before':>13} {'after x base':>13} {'torch':>6}")
    for name, _ in cases:
        before, after = (statistics.median(times[(name, s)]) for s in ("before", "after"))
        loaded = "yes" if torch[(name, "before")] or torch[(name, "after")] else "no"
        print(f"{name:<36} {before:>9.3f} {after:>9.3f} {after / before:>13.2f} {after / base:>13.1f} {loaded:>6}")


if __name__ == "__main__":
    main()
