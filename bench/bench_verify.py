"""Benchmark `bundler verify` against `sha256sum` over the same files (2 GB in 200 files by default).

Run: python bench/bench_verify.py [--gb 2] [--files 200] [--repeat 3]   (not in CI: it writes 2 x 2 GB)
Both read from the page cache (one warm-up pass first), so this measures hashing, not the disk.
The bundle is a real one with every check of issue 15 on: the blobs are one run's outputs (run ID
recomputed), the run has its statement (subjects and run manifest recomputed) and the bundle is signed
(every file compared with the signature). The target (issue 5): verify <= 0.6x the time of sha256sum on
2 cores. Rows: the CLI (start-up included) and the library call, on the directory and on its exported
tar (read in place by bundler.bundle.tarscan, one thread); peak RSS shows memory stays flat.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bundler.bundle.archive import export_bundle, verify_archive  # noqa: E402
from bundler.bundle.bag import add_run, seal_bundle  # noqa: E402
from bundler.bundle.signing import generate_key  # noqa: E402
from bundler.bundle.verify import verify_bundle  # noqa: E402
from bundler.publish.provenance import write_provenance  # noqa: E402
from bundler.publish.sign import sign_bundle  # noqa: E402


def make_bundle(root: Path, total: int, count: int) -> list[Path]:
    """A sealed bundle whose one run holds `count` blobs; returns the staged blob paths (moved into the run)."""
    (root / "data" / "recipe").mkdir(parents=True)
    (root / "data" / "recipe" / "config.toml").write_text("seed = 1\n")
    seal_bundle(root)
    payload = root.parent / "staged" / "blobs"
    payload.mkdir(parents=True)
    size = total // count
    block = os.urandom(1 << 20)
    files = []
    for index in range(count):
        path = payload / f"blob-{index:04d}.bin"
        with open(path, "wb") as handle:
            for offset in range(0, size, len(block)):
                handle.write(block[: min(len(block), size - offset)])
                handle.write(index.to_bytes(8, "little"))  # distinct files
        files.append(path)
    return files


def best_of(repeat: int, func) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        bundle = root / "bundle"
        files = make_bundle(bundle, int(args.gb * 1024**3), args.files)
        (root / "staged" / "results.json").write_text("{}\n")
        run_id = add_run(bundle, root / "staged", {"run.json": b'{"runner": "host"}\n'})
        write_provenance(bundle, run_id)
        generate_key(root / "key.pem")
        sign_bundle(bundle, root / "key.pem")  # also the warm-up pass that puts every file in the page cache
        tar = root / "bundle.tar"
        export_bundle(bundle, tar)
        all_files = [str(p) for p in sorted(bundle.rglob("*")) if p.is_file()]
        total = sum(os.path.getsize(p) for p in all_files)

        def sha256sum() -> None:
            subprocess.run(["sha256sum", *all_files], check=True, stdout=subprocess.DEVNULL)

        def cli() -> None:
            result = subprocess.run([sys.executable, "-m", "bundler", "verify", str(bundle)], capture_output=True)
            assert result.returncode == 0, result.stderr[-500:]

        def library() -> None:
            report = verify_bundle(bundle)
            assert report.ok and report.signatures, report.findings[:5]

        def cli_tar() -> None:
            result = subprocess.run([sys.executable, "-m", "bundler", "verify", str(tar)], capture_output=True)
            assert result.returncode == 0, result.stderr[-500:]

        def library_tar() -> None:
            assert verify_archive(tar).ok

        sha256sum()
        baseline = best_of(args.repeat, sha256sum)
        rows = [("sha256sum (1 process)", baseline)]
        rows.append(("bundler verify (CLI)", best_of(args.repeat, cli)))
        rows.append(("verify_bundle() (library)", best_of(args.repeat, library)))
        rows.append(("bundler verify X.tar (CLI)", best_of(args.repeat, cli_tar)))
        rows.append(("verify_archive() (library)", best_of(args.repeat, library_tar)))
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{len(files)} files, {total / 1024**3:.2f} GiB, {os.cpu_count()} cores, "
            f"Python {sys.version.split()[0]}, best of {args.repeat}"
        )
        print(f"{'what':<28} {'seconds':>8} {'GB/s':>6} {'ratio':>6}")
        for name, seconds in rows:
            print(f"{name:<28} {seconds:>8.3f} {total / seconds / 1e9:>6.2f} {seconds / baseline:>6.2f}")
        print(f"tar vs directory (library): {rows[4][1] / rows[2][1]:.2f}x; (CLI): {rows[3][1] / rows[1][1]:.2f}x")
        print(f"peak RSS of this process (library verify included): {peak_mib:.0f} MiB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
