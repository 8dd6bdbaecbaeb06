"""Benchmark: split N short examples with dedupe; print a table of seconds, peak RSS and ratios.

    python bench/bench_splits.py              # 1,000,000 examples (target: < 30 s, 2 cores)
    python bench/bench_splits.py --n 100000   # quicker

The examples are written once to a JSONL file; each case then runs in a child process of its own
(so its peak RSS, ru_maxrss, is its own) and streams the file with json.loads, the way the runtime
reads it. `build_manifest` accepts any iterable, so the memory figure is what the split itself
holds (per-example facts plus the manifest), not a list of the input rows.
About 6% of examples are duplicates (3% exact, 3% differing only in case, spacing or NFC form).

Baselines, measured in the same run:
- `content hash only`: the floor; every manifest must hash every example's canonical JSON.
- `shuffle + slice`: what a plain training script does (no hashes, no dedupe, no manifest).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CASES = [
    ("content-hash", "content hash only (floor)"),
    ("shuffle-slice", "shuffle + slice (plain script)"),
    ("hash-keep-one", "hash, dedupe keep-one"),
    ("hash-keep-group", "hash, dedupe keep-group"),
    ("hash-off", "hash, dedupe off"),
    ("stratified-keep-one", "stratified, keep-one"),
    ("temporal-keep-one", "temporal, keep-one"),
    ("write-keep-one", "hash keep-one + write splits.json"),
]
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()


def records(n: int) -> Iterator[dict[str, Any]]:
    """Yield n short examples, about 6% of them duplicates of an earlier one."""
    rng = random.Random(1234)
    for i in range(n):
        roll = rng.random()
        if i > 10 and roll < 0.03:
            base = rng.randrange(i)  # exact duplicate text of an earlier example
            prompt = _prompt(base)
        elif i > 10 and roll < 0.06:
            base = rng.randrange(i)  # same text after NFC, casefold and whitespace collapsing
            prompt = unicodedata.normalize("NFD", "  " + _prompt(base).upper().replace(" ", "\t "))
        else:
            prompt = _prompt(i)
        yield {
            "id": f"ex-{i:07d}",
            "prompt": prompt,
            "response": "ok",
            "label": ("pos", "neg", "neutral")[i % 3],
            "date": f"20{10 + i % 15:02d}-{1 + i % 12:02d}-{1 + i % 28:02d}",
        }


def _prompt(i: int) -> str:
    rng = random.Random(i)
    return f"{' '.join(rng.choice(WORDS) for _ in range(6))} café {i}?"


def write_jsonl(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as stream:
        for record in records(n):
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            yield json.loads(line)


def run_case(case: str, data: Path) -> dict[str, Any]:
    from bundler.recipe.config import BundleConfig
    from bundler.recipe.splits import build_manifest, content_hash, write_manifest

    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if case == "content-hash":
        hashes = [content_hash(r) for r in read_jsonl(data)]
        extra["examples"] = len(hashes)
    elif case == "shuffle-slice":
        ids = [r["id"] for r in read_jsonl(data)]
        random.Random(0).shuffle(ids)
        cut = int(0.8 * len(ids)), int(0.9 * len(ids))
        extra["examples"] = len(ids[: cut[0]]) + len(ids[cut[0] : cut[1]]) + len(ids[cut[1] :])
    else:
        method, _, dedupe = case.partition("-")
        if method == "write":
            method = "hash"
        config = BundleConfig.model_validate(
            {
                "project": {"name": "bench", "seed": 7},
                "model": {"id": "org/model"},
                "data": {"path": "bench.jsonl", "label_field": "label", "date_field": "date"},
                "split": {"method": method, "dedupe": dedupe},
            }
        ).resolved()
        dataset = {"format": "jsonl", "source": "bench.jsonl", "files": {}}
        manifest = build_manifest(read_jsonl(data), config, dataset)
        extra["examples"] = manifest["totals"]["examples"]
        extra["dropped"] = manifest["totals"]["dropped"]
        if case.startswith("write"):
            extra["split_s"] = round(time.perf_counter() - start, 2)
            with tempfile.TemporaryDirectory() as tmp:
                target = Path(tmp) / "splits.json"
                write_manifest(manifest, target)
                extra["manifest_mb"] = round(target.stat().st_size / 2**20, 1)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": case, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", help="run only these cases")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.data)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-splits-") as tmp:
        data = Path(tmp) / "bench.jsonl"
        write_jsonl(data, args.n)
        results = run_all(args, data)
    print_table(args.n, results)


def run_all(args: argparse.Namespace, data: Path) -> dict[str, dict[str, Any]]:
    results = {}
    for case, _ in CASES:
        if args.only and case not in args.only:
            continue
        child = subprocess.run(
            [sys.executable, __file__, "--case", case, "--data", str(data)],
            capture_output=True,
            text=True,
            check=True,
        )
        results[case] = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"  {case}: {results[case]}", file=sys.stderr)
    return results


def print_table(n: int, results: dict[str, dict[str, Any]]) -> None:
    floor = results.get("content-hash", {}).get("seconds")
    print(
        f"\nsplit benchmark: n={n:,}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}\n"
    )
    print("| case | seconds | x content-hash floor | peak RSS MB | kept | dropped |")
    print("|---|---:|---:|---:|---:|---:|")
    for case, title in CASES:
        if case not in results:
            continue
        row = results[case]
        ratio = f"{row['seconds'] / floor:.2f}" if floor else "-"
        print(
            f"| {title} | {row['seconds']:.2f} | {ratio} | {row['peak_rss_mb']} | "
            f"{row.get('examples', '-')} | {row.get('dropped', '-')} |"
        )
    if "write-keep-one" in results:
        row = results["write-keep-one"]
        print(
            f"\nwrite: split {row['split_s']} s, then splits.json "
            f"{row['manifest_mb']} MB in {row['seconds'] - row['split_s']:.2f} s"
        )


if __name__ == "__main__":
    main()
