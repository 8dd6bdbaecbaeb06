"""Benchmark secret scanning (bundle/scrub.py) against reading the same bytes, and against detect-secrets.

Run: python bench/bench_secrets.py [--mb 256] [--repeat 3] [--detect-secrets-mb 4]
The text is made here: Python source, JSON lines and prose, with URLs and identifiers that share the
rules' anchors (`sk-`, `://`, `hf_`) but are not secrets, so the slow path runs too. Both the scan and
the baseline read the same file from the page cache (a warm-up pass first) in 1 MiB chunks on one core.
The target (issue 16): at least 200 MB/s of text on one core, judged by CPU time (process_time), which
a shared machine does not inflate; wall time is printed beside it. detect-secrets is timed on a smaller
slice (it reads line by line in Python) and scaled to MB/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bundler.bundle.scrub import scan_file  # noqa: E402

LINES = [
    "def train_step(model, batch, optimizer):  # one optimizer step\n",
    "    loss = model(**batch).loss / grad_accum\n",
    '    url = "https://huggingface.co/api/models/org/name?revision=main"\n',
    '{"id": "ex-00042", "prompt": "Is the mask-task-skip ok?", "response": "yes, hf_hub works", "label": 1}\n',
    "The quick brown fox jumps over the lazy dog; disk-sk-learn uses ghp-like names and AKIA prose.\n",
    "    token = os.environ.get('HF_TOKEN')  # read at the moment of use, never stored\n",
    "import torch, numpy as np  # see https://pytorch.org/docs/stable/notes/randomness.html\n",
]


def make_text(path: Path, megabytes: int) -> int:
    rng = random.Random(0)
    block = "".join(rng.choice(LINES) for _ in range(20000)).encode()
    size = 0
    with path.open("wb") as handle:
        while size < megabytes << 20:
            handle.write(block)
            size += len(block)
    return size


def read_only(path: Path) -> None:
    with path.open("rb") as stream:
        while stream.read(1 << 20):
            pass


def best(func, repeat: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process), best of `repeat`.

    CPU time is what "on one core" means when the machine is shared: wall time also counts the time other
    processes held the core (the development machine ran at load 12 on 2 cores during the recorded run).
    """
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        func()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def detect_secrets_seconds(path: Path) -> float | None:
    try:
        from detect_secrets import SecretsCollection
        from detect_secrets.settings import default_settings
    except ImportError:
        return None
    collection = SecretsCollection()
    with default_settings():
        start = time.process_time()
        collection.scan_file(str(path))
        return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--detect-secrets-mb", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "code.txt"
        size = make_text(text, args.mb)
        read_only(text)  # warm the page cache
        baseline = best(lambda: read_only(text), args.repeat)
        scan = best(lambda: scan_file(text, "code.txt", ()), args.repeat)
        small = Path(tmp) / "small.py"
        small_size = make_text(small, args.detect_secrets_mb)
        ds = detect_secrets_seconds(small)
    mb = size / 1e6
    machine = platform.processor() or platform.machine()
    load = os.getloadavg()[0]
    print(f"# {machine}, {os.cpu_count()} cores, Python {platform.python_version()}, load average {load:.1f}")
    print(f"{'case':40} {'wall s':>7} {'CPU s':>7} {'MB/s CPU':>9} {'x read':>7}")
    rows = [(f"read the bytes (baseline), {mb:.0f} MB", *baseline), (f"bundler scan_file, {mb:.0f} MB", *scan)]
    for label, wall, cpu in rows:
        print(f"{label:40} {wall:7.3f} {cpu:7.3f} {mb / cpu:9.0f} {cpu / baseline[1]:7.1f}")
    if ds is not None:
        rate = small_size / 1e6 / ds
        label = f"detect-secrets scan_file, {small_size / 1e6:.0f} MB"
        print(f"{label:40} {'':7} {ds:7.3f} {rate:9.2f} {(mb / rate) / baseline[1]:7.0f}")
    print(f"target: >= 200 MB/s on one core (CPU time): {'yes' if mb / scan[1] >= 200 else 'NO'}")


if __name__ == "__main__":
    main()
