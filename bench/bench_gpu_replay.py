"""Replay on a GPU: record a run of a 1B-shape bundle, replay it, and print the verdicts as a table.

Two cases, each a bundle built from the quickstart project with the model reshaped and the device set:
  deterministic     [train] deterministic = true  -> the replay is expected IDENTICAL
  nondeterministic  [train] deterministic = false -> the report says bitwise is not expected

For each: `bundler build --no-run --runner host`, `bundler run --runner host --allow-drift` (the recorded
run; the host interpreter is the device's, so the lock's CPU pins drift and that is recorded), then
`bundler replay --allow-drift --json --report OUT/<case>`.

usage: python bench/bench_gpu_replay.py [OUT]    env: BENCH_SHAPE=1b|quickstart  BENCH_DEVICE=cuda|cpu
       BENCH_STEPS (default 30)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Llama-3.2-1B's body (hidden 2048, 16 layers, 32 heads, 8 KV heads, MLP 8192); the vocabulary stays at
# the byte tokenizer's 512, so the embeddings are small and the rest is the 1B shape.
SHAPES = {
    "1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
    },
    "quickstart": {},
}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bundler", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={
            **os.environ,
            "NO_COLOR": "1",
            **(env or {}),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        },
    )


def must(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode not in (0, 1):
        print(f"{what} failed ({result.returncode}):\n{result.stderr[-3000:]}", file=sys.stderr)
        sys.exit(result.returncode)


def make_project(root: Path, name: str, shape: str, device: str, steps: int, deterministic: bool) -> Path:
    project = root / name
    shutil.copytree(REPO / "examples" / "tiny", project, ignore=shutil.ignore_patterns("out", "__pycache__"))
    text = (project / "bundle.toml").read_text()
    for key, value in SHAPES[shape].items():
        text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
    text = re.sub(r"(?m)^max_steps = .*$", f"max_steps = {steps}", text)
    text = re.sub(
        r"(?m)^device = .*$",
        f'device = "{device}"\nprecision = "{"bf16" if device == "cuda" else "fp32"}"'
        + ("" if deterministic else "\ndeterministic = false"),
        text,
    )
    (project / "bundle.toml").write_text(text)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.invalid",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    }
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", name]):
        subprocess.run(["git", "-C", str(project), *args], check=True, env=env, capture_output=True)
    return project


def case(root: Path, out: Path, name: str, shape: str, device: str, steps: int, deterministic: bool) -> dict:
    project = make_project(root, name, shape, device, steps, deterministic)
    bundle = root / f"{name}.bundle"
    t0 = time.perf_counter()
    must(cli("build", str(project), "--out", str(bundle), "--runner", "host", "--no-run"), f"{name}: build")
    t1 = time.perf_counter()
    must(cli("run", str(bundle), "--runner", "host", "--allow-drift", "--json"), f"{name}: recorded run")
    t2 = time.perf_counter()
    replay = cli("replay", str(bundle), "--allow-drift", "--json", "--report", str(out / name))
    must(replay, f"{name}: replay")
    t3 = time.perf_counter()
    report = json.loads(replay.stdout)
    return {
        "case": name,
        "report": report,
        "exit": replay.returncode,
        "build_s": t1 - t0,
        "run_s": t2 - t1,
        "replay_s": t3 - t2,
        "table": cli_table(bundle, report),
    }


def cli_table(bundle: Path, report: dict) -> str:
    """The terminal table of the same comparison, without running again (what `bundler replay` prints)."""
    code = "import json,sys; from bundler.audit.report import render_table; render_table(json.load(open(sys.argv[1])))"
    path = bundle.parent / "report-for-table.json"
    path.write_text(json.dumps(report))
    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "120"},
    ).stdout


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench-replay-out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    shape, device = os.environ.get("BENCH_SHAPE", "1b"), os.environ.get("BENCH_DEVICE", "cuda")
    steps = int(os.environ.get("BENCH_STEPS", "30"))
    root = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    rows = [
        case(root, out, "deterministic", shape, device, steps, True),
        case(root, out, "nondeterministic", shape, device, steps, False),
    ]
    fp = rows[0]["report"]["fingerprints"]["replay"]
    print(
        f"device {fp.get('device')}, SM {fp.get('sm_count')}, driver(cuda) {fp.get('driver')}, "
        f"torch {fp.get('library.torch')}, transformers {fp.get('library.transformers')}, "
        f"peft {fp.get('library.peft')}; shape {shape}, {steps} steps"
    )
    print(
        "| recorded run | verdict | expected | exit | adapter bytes | max rel loss diff | first loss difference "
        "| record s | replay s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        r = row["report"]
        loss = r["steps"]["fields"]["loss"]
        print(
            f"| {row['case']} | {r['verdict']} | {r['expected']} | {row['exit']} | "
            f"{'equal' if r['adapter'].get('bytes_equal') else 'differ'} | {loss['max_rel']:.3g} | "
            f"{loss['first_difference_step'] or '-'} | {row['run_s']:.1f} | {row['replay_s']:.1f} |"
        )
    for row in rows:
        print(f"\n--- {row['case']}: `bundler replay` table ---\n{row['table']}")


if __name__ == "__main__":
    main()
