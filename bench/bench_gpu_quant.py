"""GPU benchmark of QLoRA (`[lora] quantization = "4bit"`) against the runtime's bf16 mode.

Builds a small Llama-shaped model from a config under a fixed seed (no download), saves it once,
and trains LoRA r=16 on all attention and MLP linear layers with seeded random tokens. Each trial is
a child process (PYTHONHASHSEED and CUBLAS_WORKSPACE_CONFIG precede CUDA init) that runs the
runtime's real code: configure_determinism, load_base_model or quant.load_4bit_model,
apply_lora, make_optimizer, train_step, adapter_state + safetensors (the adapter file's bytes).

  bf16   the runtime's default GPU mode: bf16 base weights, float32 LoRA, bf16 autocast
  4bit   NF4 base weights with double quantization, bf16 compute, peft k-bit preparation

Questions answered: are two 4-bit runs bit-identical (adapter bytes and every loss)? What do
4 bits cost in tokens/s and save in peak memory at the same shape?

usage: python bench/bench_gpu_quant.py [steps]        (default 30)
env:   TRIALS=bf16,4bit,4bit,bf16  OUT=<dir for the model and per-trial JSON>  BENCH_SHAPE=small|1b
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]
from bench_gpu_runtime import lora_spec, train_spec  # noqa: E402

SHAPES = {
    # name: hidden, layers, heads, kv_heads, intermediate, vocab
    "small": (1024, 8, 16, 8, 4096, 32000),
    "1b": (2048, 16, 32, 8, 8192, 128256),
}
SHAPE = SHAPES[os.environ.get("BENCH_SHAPE", "small")]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SEQ, BATCH, WARMUP = 512, 8, 5


def save_model(path: Path) -> None:
    """The base model in bf16 from seed 1234, saved once so every trial loads the same bytes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    h, layers, heads, kv, inter, vocab = SHAPE
    config = LlamaConfig(
        hidden_size=h,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=inter,
        vocab_size=vocab,
        max_position_embeddings=2048,
    )
    torch.manual_seed(1234)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(path)


def trial(mode: str, model_dir: Path, steps: int) -> dict:
    import torch
    from safetensors.torch import save

    sys.path.insert(0, str(REPO))
    from bundler.runtime.determinism import configure_determinism
    from bundler.runtime.modeling import adapter_state, apply_lora, load_base_model
    from bundler.runtime.quant import check_quantization, load_4bit_model, quantization_settings
    from bundler.runtime.train import make_optimizer, tensor_hash, train_step

    device = torch.device("cuda")
    lora = lora_spec(quantization="none" if mode == "bf16" else mode)
    configure_determinism(1234, deterministic=True, device=device)
    check_quantization(lora, device)
    load = load_4bit_model if mode == "4bit" else load_base_model
    base = load(model_dir, torch.bfloat16, device)
    model = apply_lora(base, lora, init_seed=42, compute_dtype=torch.bfloat16)
    optimizer, scheduler = make_optimizer(model, train_spec(steps))
    model.peft_model.train()
    data = torch.randint(0, SHAPE[5], (steps, BATCH, SEQ), generator=torch.Generator().manual_seed(7))
    losses, grad_norms, t0 = [], [], 0.0
    for i in range(steps):
        if i == WARMUP:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        stats = train_step(model, [(data[i], data[i])], optimizer, scheduler, max_grad_norm=1.0)
        losses.append(stats.loss)
        grad_norms.append(stats.grad_norm)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    state = adapter_state(model)
    blob = save(state, metadata={"format": "pt"})
    return {
        "mode": mode,
        "tok_s": (steps - WARMUP) * BATCH * SEQ / seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "losses": losses,
        "grad_norms": grad_norms,
        "adapter_sha256": hashlib.sha256(blob).hexdigest(),
        "adapter_tensor_sha256": tensor_hash(state),
        "quantization": quantization_settings(lora, torch.bfloat16),
    }


def versions() -> str:
    import importlib.metadata as md

    import torch

    names = ("torch", "transformers", "peft", "bitsandbytes")
    found = ", ".join(f"{n} {md.version(n)}" for n in names)
    props = torch.cuda.get_device_properties(0)
    return (
        f"{props.name} (sm_{props.major}{props.minor}, {props.multi_processor_count} SMs); {found}; "
        f"CUDA {torch.version.cuda}; python {sys.version.split()[0]}"
    )


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    trials = os.environ.get("TRIALS", "bf16,4bit,4bit,bf16").split(",")
    outdir = Path(os.environ.get("OUT", "/tmp"))
    model_dir = outdir / f"model-{os.environ.get('BENCH_SHAPE', 'small')}"
    if not (model_dir / "config.json").exists():
        save_model(model_dir)
    results = []
    for index, mode in enumerate(trials):
        out = outdir / f"quant_{index}_{mode}.json"
        env = {**os.environ, "PYTHONHASHSEED": "0", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
        cmd = [sys.executable, __file__, "--child", mode, str(model_dir), str(steps), str(out)]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if run.returncode:
            print(f"{mode} failed:\n{run.stderr[-4000:]}", flush=True)
            continue
        results.append(json.loads(out.read_text()))
        r = results[-1]
        print(
            f"{mode:5s} tok/s={r['tok_s']:.0f} peak={r['peak_gib']:.2f}GiB first={r['losses'][0]:.6f} "
            f"last={r['losses'][-1]:.6f} adapter={r['adapter_sha256'][:16]}",
            flush=True,
        )
    report(results, steps)


def report(results: list[dict], steps: int) -> None:
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["mode"], []).append(r)
    if "bf16" not in by:
        return
    base_tok = sum(r["tok_s"] for r in by["bf16"]) / len(by["bf16"])
    base_mem = sum(r["peak_gib"] for r in by["bf16"]) / len(by["bf16"])
    h, layers, heads, kv, inter, vocab = SHAPE
    print(
        f"\n{versions()}\nLlama-shaped: hidden {h}, {layers} layers, {heads} heads, {kv} KV heads, "
        f"MLP {inter}, vocab {vocab}; seq {SEQ}, batch {BATCH}; LoRA r=16 on {len(TARGETS)} linear "
        f"layers; {steps} steps ({WARMUP} warm-up not timed); deterministic mode\n"
    )
    print("| mode | runs | tokens/s | vs bf16 | peak GiB | vs bf16 | runs bit-identical |")
    print("|---|---|---|---|---|---|---|")
    for mode in ("bf16", "4bit"):
        runs = by.get(mode, [])
        if not runs:
            continue
        tok = sum(r["tok_s"] for r in runs) / len(runs)
        mem = sum(r["peak_gib"] for r in runs) / len(runs)
        same = "n/a (1 run)"
        if len(runs) >= 2:
            adapters = len({r["adapter_sha256"] for r in runs}) == 1
            curves = all(r["losses"] == runs[0]["losses"] for r in runs)
            norms = all(r["grad_norms"] == runs[0]["grad_norms"] for r in runs)
            same = f"adapter {adapters}, losses {curves}, grad norms {norms}"
        print(
            f"| {mode} | {len(runs)} | {tok / 1000:.1f}k | {tok / base_tok:.2f}x | {mem:.2f} | "
            f"{mem / base_mem:.2f}x | {same} |"
        )
    if by.get("4bit"):
        first = by["4bit"][0]
        print(
            f"\n4bit vs bf16 first loss: {first['losses'][0]:.6f} vs {by['bf16'][0]['losses'][0]:.6f}; "
            f"last: {first['losses'][-1]:.6f} vs {by['bf16'][0]['losses'][-1]:.6f}"
        )
        print("4bit settings: " + json.dumps(first["quantization"]["quantization"]["value"], sort_keys=True))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, mode_, model_dir_, steps_, out_ = sys.argv
        Path(out_).write_text(json.dumps(trial(mode_, Path(model_dir_), int(steps_))))
    else:
        main()
