"""GPU benchmark of the runtime's training step against the plain transformers+PEFT loop.

Builds a Llama-shaped model from a config under a fixed seed (no download), adds LoRA r=16 on all
attention and MLP linear layers, and trains on seeded random tokens. Each trial runs in a child
process so that PYTHONHASHSEED and CUBLAS_WORKSPACE_CONFIG precede CUDA init. Trials:

  plain        the plain transformers+PEFT loop of shared/reference/gpu_probe.py ("nondet" mode):
               model(input_ids, labels).loss, LoRA in float32, full float32 logits
  ours-det     bundler.runtime's own train_step in deterministic mode (run twice: bitwise check)
  ours-nondet  the same step with deterministic = false

usage: python bench/bench_gpu_runtime.py [size] [steps]      (size: 1b, 8b, tiny; default 1b 30)
env:   TRIALS=plain,ours-det,ours-det,ours-nondet  BENCH_DEVICE=cuda|cpu (cpu: smoke test only)
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
SIZES = {
    # name: hidden, layers, heads, kv_heads, intermediate, vocab
    "tiny": (256, 4, 8, 4, 1024, 32000),
    "1b": (2048, 16, 32, 8, 8192, 128256),
    "8b": (4096, 32, 32, 8, 14336, 128256),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SEQ, BATCH, WARMUP = 1024, 8, 5


def lora_spec(dropout: float = 0.05, quantization: str = "none"):
    """The benchmarks' LoRA: r=16, alpha 32 on all seven linear layers, init seed 42."""
    from bundler.runtime.specs import LoraSpec

    return LoraSpec(
        r=16, alpha=32, dropout=dropout, target_modules=tuple(TARGETS), init_seed=42, quantization=quantization
    )


def train_spec(steps: int, device: str = "cuda", batch: int = BATCH, seq: int = SEQ):
    """The benchmarks' optimizer settings: AdamW at lr 2e-4, constant schedule, no warmup, no weight decay."""
    from bundler.runtime.specs import TrainSpec

    return TrainSpec(
        seed=1234, max_steps=steps, batch_size=batch, grad_accum=1, learning_rate=2e-4, scheduler="constant",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, max_seq_len=seq, loss_on_response_only=False,
        packing=False, eval_every=0, device=device, precision="auto", deterministic=True, num_processes=1,
    )  # fmt: skip


def build_model(size: str, device: str):
    """The Llama-shaped base model in bf16 (float32 on CPU), initialised under seed 1234."""
    return llama_model(SIZES[size], device), SIZES[size][5]


def llama_model(shape: tuple[int, ...], device: str):
    """A Llama of shape (hidden, layers, heads, kv_heads, intermediate, vocab), seed 1234, bf16 on CUDA."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    h, layers, heads, kv, inter, vocab = shape[:6]
    cfg = LlamaConfig(
        hidden_size=h,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=inter,
        vocab_size=vocab,
        max_position_embeddings=4096,
        attn_implementation="sdpa",
    )
    torch.manual_seed(1234)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    return model.to(torch.bfloat16 if device == "cuda" else torch.float32)


def synthetic_tokens(steps: int, vocab: int, seq: int, batch: int):
    import torch

    return torch.randint(0, vocab, (steps, batch, seq), generator=torch.Generator().manual_seed(7))


def adapter_digest(model) -> str:
    digest = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            digest.update(name.encode())
            digest.update(p.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def plain_loop(size: str, steps: int, device: str) -> dict:
    """gpu_probe.py's nondet loop, unchanged in substance: the yardstick."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, vocab = build_model(size, device)
    torch.manual_seed(42)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    data = synthetic_tokens(steps, vocab, SEQ, BATCH)
    losses, t0 = [], None
    for i in range(steps):
        if i == WARMUP:
            sync(device)
            t0 = time.perf_counter()
        x = data[i].to(device, non_blocking=True)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    sync(device)
    return finish(model, losses, time.perf_counter() - t0, steps, device)


def ours(size: str, steps: int, device: str, deterministic: bool) -> dict:
    """The runtime's real code: configure_determinism, apply_lora, make_optimizer, train_step."""
    import torch

    sys.path.insert(0, str(REPO))
    from bundler.runtime.determinism import configure_determinism
    from bundler.runtime.modeling import apply_lora, resolve_precision
    from bundler.runtime.train import make_optimizer, train_step

    dev = torch.device(device)
    configure_determinism(1234, deterministic=deterministic, device=dev)
    model, vocab = build_model(size, device)
    lora = lora_spec()
    wrapped = apply_lora(model, lora, init_seed=42, compute_dtype=resolve_precision("auto", dev))
    optimizer, scheduler = make_optimizer(wrapped, train_spec(steps, device))
    wrapped.peft_model.train()
    data = synthetic_tokens(steps, vocab, SEQ, BATCH)
    losses, t0 = [], None
    for i in range(steps):
        if i == WARMUP:
            sync(device)
            t0 = time.perf_counter()
        stats = train_step(wrapped, [(data[i], data[i])], optimizer, scheduler, max_grad_norm=1e9)
        losses.append(stats.loss)
    sync(device)
    return finish(wrapped.peft_model, losses, time.perf_counter() - t0, steps, device)


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def finish(model, losses: list[float], seconds: float, steps: int, device: str) -> dict:
    import torch

    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {
        "tok_s": (steps - WARMUP) * BATCH * SEQ / seconds,
        "step_ms": 1000 * seconds / (steps - WARMUP),
        "peak_gib": peak,
        "losses": losses,
        "adapter_sha": adapter_digest(model),
    }


def child(trial: str, size: str, steps: int, device: str, out: str) -> None:
    if trial == "plain":
        result = plain_loop(size, steps, device)
    else:
        result = ours(size, steps, device, deterministic=trial == "ours-det")
    result.update(trial=trial, size=size)
    Path(out).write_text(json.dumps(result))


def versions() -> str:
    import importlib.metadata as md

    import torch

    names = ("torch", "transformers", "peft", "accelerate")
    found = ", ".join(f"{n} {md.version(n)}" for n in names)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{gpu}; {found}; CUDA {torch.version.cuda}; python {sys.version.split()[0]}"


def main() -> None:
    size = sys.argv[1] if len(sys.argv) > 1 else "1b"
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    device = os.environ.get("BENCH_DEVICE", "cuda")
    trials = os.environ.get("TRIALS", "plain,ours-det,ours-det,ours-nondet,plain").split(",")
    outdir = Path(os.environ.get("OUT", "/tmp"))
    results = []
    for index, trial in enumerate(trials):
        env = {**os.environ, "PYTHONHASHSEED": "0", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
        out = outdir / f"bench_{index}_{trial}.json"
        cmd = [sys.executable, __file__, "--child", trial, size, str(steps), device, str(out)]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if run.returncode:
            print(f"{trial} failed:\n{run.stderr[-4000:]}")
            continue
        results.append(json.loads(out.read_text()))
        r = results[-1]
        print(
            f"{trial:12s} tok/s={r['tok_s']:.0f} peak={r['peak_gib']:.1f}GiB "
            f"first_loss={r['losses'][0]:.6f} last_loss={r['losses'][-1]:.6f} "
            f"sha={r['adapter_sha'][:16]}",
            flush=True,
        )
    report(results, size, steps)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def report(results: list[dict], size: str, steps: int) -> None:
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["trial"], []).append(r)
    if "plain" not in by:
        return
    base_tok = mean([r["tok_s"] for r in by["plain"]])
    base_mem = mean([r["peak_gib"] for r in by["plain"]])
    print(
        f"\n{versions()}\nsize {size}, seq {SEQ}, batch {BATCH}, "
        f"LoRA r=16 on {len(TARGETS)} linear layers, "
        f"{steps} steps ({WARMUP} warm-up not timed)\n"
    )
    print("| mode | runs | tokens/s | vs plain | peak GiB | vs plain |")
    print("|---|---|---|---|---|---|")
    for trial in ("plain", "ours-det", "ours-nondet"):
        if trial in by:
            tok, mem = (
                mean([r["tok_s"] for r in by[trial]]),
                mean([r["peak_gib"] for r in by[trial]]),
            )
            print(
                f"| {trial} | {len(by[trial])} | {tok / 1000:.1f}k | {tok / base_tok:.2f}x | "
                f"{mem:.1f} | "
                f"{mem / base_mem:.2f}x |"
            )
    det = by.get("ours-det", [])
    if len(det) >= 2:
        same = det[0]["adapter_sha"] == det[1]["adapter_sha"]
        curves = det[0]["losses"] == det[1]["losses"]
        print(f"\nours-det twice: adapters bitwise equal = {same}; loss curves identical = {curves}")
    if det and "ours-nondet" in by:
        ratio = mean([r["tok_s"] for r in det]) / mean([r["tok_s"] for r in by["ours-nondet"]])
        print(f"ours-det / ours-nondet tokens/s = {ratio:.3f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, trial_, size_, steps_, device_, out_ = sys.argv
        child(trial_, size_, int(steps_), device_, out_)
    else:
        main()
