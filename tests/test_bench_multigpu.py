"""bench/bench_multigpu.py runs end to end on the CPU (gloo, tiny shape), so its GPU run cannot fail on a bug.

Two trials of 3 steps: one process, then two under torchrun; about 70 s on the 2-core dev machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_multigpu_smoke_on_cpu_reports_scaling_and_bitwise_checks(tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_DEVICE": "cpu", "TRIALS": "one_b8,two_a,two_b", "OUT": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_multigpu.py"), "3"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| two_a | 2 | 4 | ordered |" in done.stdout
    summary = json.loads((tmp_path / "bench_multigpu.json").read_text())
    assert set(summary["trials"]) == {"one_b8", "two_a", "two_b"} and summary["skipped"] == []
    checks = summary["checks"]
    assert checks["two_runs_adapters_bitwise_equal"] and checks["two_runs_losses_identical_every_step"]
    assert checks["ranks_agree"] and checks["scaling_2gpu_vs_1gpu"] > 0
