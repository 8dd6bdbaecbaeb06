"""Training throughput with 1 and N processes (accelerate launch, gloo on the CPU, NCCL on GPUs).

Runs `python -m runtime RECIPE OUT` as the runners do, with BUNDLER_NUM_PROCESSES=1 (the baseline,
measured in the same run) and =N, on the tests' recipe (48 train examples, batch 8, seq <= 128) with
the tiny model made at the chosen size. tokens/s = results.json tokens / train_seconds (the training
loop only, rank 0's clock); wall s includes interpreter start, model load, the launch and evaluation.

usage: python bench/bench_multiprocess.py [size] [steps] [processes]   (size: quickstart|small; 40 2)
env:   BENCH_DEVICE=cpu|cuda (default cpu)  REPEAT=2
"""

from __future__ import annotations

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

SIZES = {
    "quickstart": {},  # the quickstart's tiny model: hidden 64, 2 layers
    "small": {
        "hidden_size": 256,
        "intermediate_size": 1024,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
    },
}


def make_model(size: str, target: Path) -> None:
    from tests.test_runtime import RUNTIME, TINY

    home = target.parent / "runtime-home"
    shutil.copytree(RUNTIME, home / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "runtime.tiny", str(target), json.dumps({**TINY, **SIZES[size]})],
        check=True,
        env={**os.environ, "PYTHONPATH": str(home)},
        capture_output=True,
    )


def trial(root: Path, model: Path, steps: int, processes: int, device: str) -> dict[str, float]:
    from tests.test_runtime import make_recipe, run_runtime

    train = {"max_steps": steps, "eval_every": steps, "batch_size": 8, "device": device}
    paths = make_recipe(root, config_overrides={"train": train}, model_dir=model)
    started = time.perf_counter()
    result = run_runtime(paths, root / "out", BUNDLER_NUM_PROCESSES=str(processes))
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(result.stdout[-2000:] + result.stderr[-4000:])
    results = json.loads((root / "out" / "results.json").read_text())
    return {
        "tokens_per_s": results["tokens"] / results["train_seconds"],
        "wall": wall,
        "sha": results["adapter_tensor_sha256"],
    }


def main() -> None:
    size = sys.argv[1] if len(sys.argv) > 1 else "quickstart"
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    processes = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    device = os.environ.get("BENCH_DEVICE", "cpu")
    repeat = int(os.environ.get("REPEAT", "2"))
    import torch

    with tempfile.TemporaryDirectory(prefix="bench-mp-") as tmp:
        model = Path(tmp) / "model"
        make_model(size, model)
        rows: dict[int, list[dict[str, float]]] = {1: [], processes: []}
        for r in range(repeat):  # interleaved, so load on the machine hits both alike
            for n in rows:
                rows[n].append(trial(Path(tmp) / f"p{n}-{r}", model, steps, n, device))
    base = statistics.median(t["tokens_per_s"] for t in rows[1])
    print(
        f"{size} model, {steps} steps, batch 8, {device}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"median of {repeat}"
    )
    print(f"{'processes':>9} {'tokens/s':>10} {'x 1 proc':>9} {'wall s':>8}  adapters bitwise equal across repeats")
    for n, trials in rows.items():
        rate = statistics.median(t["tokens_per_s"] for t in trials)
        wall = statistics.median(t["wall"] for t in trials)
        same = len({t["sha"] for t in trials}) == 1
        print(f"{n:>9} {rate:>10.0f} {rate / base:>9.2f} {wall:>8.1f}  {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
