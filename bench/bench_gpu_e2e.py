"""End to end: `python -m runtime` itself on instruction-tuning lengths, counting real tokens per second.

Writes a Llama-shaped model (random init under a seed, safetensors), a JSONL dataset whose
examples are 50-1024 byte-tokens long (log-normal, median ~260, prompt ~30% of each; the model
ships no tokenizer, so the runtime's byte tokenizer applies), splits and a recipe, then runs the
runtime in a child process as the runners do, per variant:

  hf-padded      BUNDLER_FUSED=0: the transformers+peft path, batches padded to their longest
  fused-padded   the fused path (the default on CUDA), padded batches
  fused-packed   the fused path with train.packing = true (whole examples per row, per-document
                 attention), run twice: adapters must be bitwise equal

Real tokens are the non-padding tokens of the micro-batches the run trained on, recounted on the
CPU by the runtime's own seeded batching; the rate is over the whole process (model load and
hashing, compile, canary, evaluation, reference outputs) and over the training loop alone.

usage: python bench/bench_gpu_e2e.py [size] [steps]          (size 1b or tiny; default 1b 30)
env:   VARIANTS=hf-padded,fused-padded,fused-packed,fused-packed  BENCH_DEVICE=cuda|cpu
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]
from bench_gpu_runtime import TARGETS, build_model  # noqa: E402

WORDS = "the a model data answer question explain list three ways to improve write short summary of".split()
COUNTS = {"train": 6000, "val": 64, "test": 16}


def sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def canonical(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def make_records(n: int, max_len: int) -> list[dict]:
    import numpy as np

    rng = np.random.Generator(np.random.PCG64(2026))
    lengths = np.clip(rng.lognormal(np.log(260), 0.75, n), 50, max_len).astype(int)
    records = []
    for i, total in enumerate(lengths):
        prompt_len = max(10, int(total * 0.3))
        words = rng.choice(WORDS, size=total)
        text = " ".join(words)
        records.append({"id": f"ex{i:05d}", "prompt": text[:prompt_len], "response": text[prompt_len : total - 2]})
    return records


def make_inputs(root: Path, size: str, device: str, max_len: int) -> dict[str, Path]:
    model_dir, data_dir = root / "model", root / "data"
    if not (model_dir / "config.json").exists():
        model, _ = build_model(size, device)
        model.save_pretrained(model_dir, safe_serialization=True)
        del model
    data_dir.mkdir(parents=True, exist_ok=True)
    records = make_records(sum(COUNTS.values()), max_len)
    (data_dir / "data.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    ids, parts, at = [r["id"] for r in records], {}, 0
    for name, count in COUNTS.items():
        parts[name], at = ids[at : at + count], at + count
    by_id = {r["id"]: r for r in records}
    return {"model": model_dir, "data": data_dir, "parts": parts, "by_id": by_id}  # type: ignore[dict-item]


def write_recipe(root: Path, inputs: dict, *, steps: int, packing: bool, device: str, max_len: int) -> Path:
    recipe = root / "recipe"
    shutil.rmtree(recipe, ignore_errors=True)
    recipe.mkdir(parents=True)
    config = f"""[project]
name = "e2e"
seed = 0

[model]
id = "bench/llama-random"

[data]
path = "data.jsonl"

[train]
max_steps = {steps}
batch_size = 8
max_seq_len = {max_len}
eval_every = {max(1, steps // 2)}
learning_rate = 2e-4
scheduler = "constant"
warmup_steps = 0
device = "{device}"
packing = {str(packing).lower()}

[lora]
r = 16
alpha = 32
dropout = 0.05
target_modules = {json.dumps(TARGETS)}
"""
    (recipe / "config.toml").write_text(config)
    splits = {
        "schema": "bundler.recipe.splits/1",
        "id_field": "id",
        "splits": {
            name: {"ids": ids, "count": len(ids), "examples": {i: canonical(inputs["by_id"][i]) for i in ids}}
            for name, ids in inputs["parts"].items()
        },
    }
    files = {p.name: sha(p) for p in sorted(inputs["model"].iterdir()) if p.is_file()}
    manifests = {
        "splits.json": splits,
        "dataset.json": {"format": "jsonl", "files": {"data.jsonl": sha(inputs["data"] / "data.jsonl")}},
        "model.json": {"id": "bench/llama-random", "revision": "main", "files": files},
    }
    for name, obj in manifests.items():
        (recipe / name).write_text(json.dumps(obj, sort_keys=True, indent=2) + "\n")
    shutil.copytree(REPO / "bundler" / "runtime", recipe / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
    return recipe


def real_tokens(inputs: dict, *, steps: int, packing: bool, max_len: int) -> tuple[int, int]:
    """(real, total) tokens of the first `steps` steps, from the runtime's own seeded batching."""
    from bundler.runtime.batches import train_batches
    from bundler.runtime.data import ByteTokenizer, encode

    tok = ByteTokenizer()
    data = {"prompt_field": "prompt", "response_field": "response"}
    encoded = [encode(inputs["by_id"][i], data, tok, max_len, True) for i in sorted(inputs["parts"]["train"])]
    batches = train_batches(
        encoded, seed=0, batch_size=8, grad_accum=1, pad_id=tok.pad_token_id, packing=packing, max_len=max_len
    )
    real = total = 0
    for _ in range(steps):
        for micro in next(batches):
            real += int((micro[0] != tok.pad_token_id).sum())
            total += micro[0].numel()
    return real, total


def run_variant(root: Path, inputs: dict, variant: str, *, steps: int, device: str, max_len: int) -> dict:
    packing = variant.endswith("packed")
    recipe = write_recipe(root, inputs, steps=steps, packing=packing, device=device, max_len=max_len)
    out = root / f"out-{variant}-{time.time_ns()}"
    env = {
        **os.environ,
        "PYTHONPATH": str(recipe),
        "BUNDLER_MODEL_DIR": str(inputs["model"]),
        "BUNDLER_DATA_DIR": str(inputs["data"]),
        "PYTHONHASHSEED": "0",
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "BUNDLER_FUSED": "0" if variant.startswith("hf") else os.environ.get("BUNDLER_FUSED", "auto"),
    }
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "runtime", str(recipe), str(out)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if run.returncode:
        return {"variant": variant, "error": run.stderr[-3000:]}
    results = json.loads((out / "results.json").read_text())
    env_json = json.loads((out / "env.json").read_text())
    settings = env_json.get("determinism", env_json)
    curve = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    real, total = real_tokens(inputs, steps=steps, packing=packing, max_len=max_len)
    return {
        "variant": variant,
        "wall_s": wall,
        "train_s": results["train_seconds"],
        "real_tokens": real,
        "padded_tokens": total,
        "real_tok_s_wall": real / wall,
        "real_tok_s_train": real / results["train_seconds"],
        "adapter": results["adapter_tensor_sha256"],
        "val_loss": results["eval"]["val_loss"],
        "losses": [c["loss"] for c in curve if "loss" in c],
        "canary": settings.get("determinism_canary", {}).get("value"),
        "claim": settings.get("deterministic_claim", {}).get("value"),
    }


def main() -> None:
    size = sys.argv[1] if len(sys.argv) > 1 else "1b"
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    device = os.environ.get("BENCH_DEVICE", "cuda")
    max_len = 1024 if size != "tiny" else 256
    variants = os.environ.get("VARIANTS", "hf-padded,fused-padded,fused-packed,fused-packed").split(",")
    root = Path(os.environ.get("E2E_ROOT", "/tmp/bundler-e2e"))
    inputs = make_inputs(root, size, device, max_len)
    rows = []
    for variant in variants:
        row = run_variant(root, inputs, variant, steps=steps, device=device, max_len=max_len)
        rows.append(row)
        if "error" in row:
            print(f"{variant} failed:\n{row['error']}", flush=True)
            continue
        print(
            f"{variant}: wall {row['wall_s']:.1f}s train {row['train_s']:.1f}s real {row['real_tokens']} of "
            f"{row['padded_tokens']} tokens; {row['real_tok_s_wall']:.0f} real tok/s (wall), "
            f"{row['real_tok_s_train']:.0f} (train loop); val_loss {row['val_loss']:.4f}; "
            f"adapter {row['adapter'][:12]}; canary {row['canary']}",
            flush=True,
        )
    Path(os.environ.get("OUT", "/tmp"), f"e2e_{size}.json").write_text(json.dumps(rows, indent=1))
    print("\n| variant | real/padded tokens | wall s | real tok/s (wall) | real tok/s (train loop) | val loss |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" not in r:
            print(
                f"| {r['variant']} | {r['real_tokens'] / r['padded_tokens']:.2f} | {r['wall_s']:.1f} | "
                f"{r['real_tok_s_wall'] / 1000:.1f}k | {r['real_tok_s_train'] / 1000:.1f}k | {r['val_loss']:.4f} |"
            )
    packed = [r for r in rows if r["variant"] == "fused-packed" and "error" not in r]
    if len(packed) >= 2:
        same = packed[0]["adapter"] == packed[1]["adapter"] and packed[0]["losses"] == packed[1]["losses"]
        print(f"\nfused-packed twice: adapters and loss curves bitwise equal = {same}")


if __name__ == "__main__":
    main()
