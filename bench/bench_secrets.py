"""Benchmark secret scanning (bundle/scrub.py) against reading the same bytes, and against detect-secrets.

Run: python bench/bench_secrets.py [--mb 256] [--repeat 3] [--detect-secrets-mb 4]
The text is made here: Python source, JSON lines and prose, with URLs and identifiers that share the
rules' anchors (`sk-`, `://`, `hf_`) but are not secrets, so the slow path runs too. Both the scan and
the baseline read the same file from the page cache (a warm-up pass first) in 1 MiB chunks on one core.
The target (issue 16): at least 200 MB/s of text on one core. detect-secrets is timed on a smaller
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


def best(func, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def detect_secrets_seconds(path: Path) -> float | None:
    try:
        from detect_secrets import SecretsCollection
        from detect_secrets.settings import default_settings
    except ImportError:
        return None
    collection = SecretsCollection()
    with default_settings():
        start = time.perf_counter()
        collection.scan_file(str(path))
        return time.perf_counter() - start


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
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'case':44} {'seconds':>8} {'MB/s':>8} {'x read':>7}")
    label = f"read the bytes (baseline), {mb:.0f} MB"
    print(f"{label:44} {baseline:8.3f} {mb / baseline:8.0f} {1.0:7.1f}")
    print(f"{'bundler scan_file, ' + format(mb, '.0f') + ' MB':44} {scan:8.3f} {mb / scan:8.0f} {scan / baseline:7.1f}")
    if ds is not None:
        rate = small_size / 1e6 / ds
        print(f"{'detect-secrets scan_file, ' + format(small_size / 1e6, '.0f') + ' MB':44} {ds:8.3f} {rate:8.1f} "
              f"{(mb / rate) / baseline:7.0f}")
    print(f"target: >= 200 MB/s on one core: {'yes' if mb / scan >= 200 else 'NO'}")


if __name__ == "__main__":
    main()
