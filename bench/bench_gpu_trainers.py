"""GPU benchmark: the runtime's fused deterministic path against the plain, Liger and compiled loops.

Every trainer runs in its own child process (PYTHONHASHSEED=0, CUBLAS_WORKSPACE_CONFIG=:4096:8
before CUDA starts), interleaved in one call, same model (Llama shape from a seed), same tokens:

  plain        transformers+PEFT loop of shared/reference/gpu_probe.py ("nondet")
  liger        the same loop after liger_kernel's apply_liger_kernel_to_llama() (nondeterministic)
  compile      the same loop under torch.compile(model), default mode (nondeterministic)
  ours-det     bundler.runtime: configure_determinism, apply_lora, make_optimizer,
               enable_fused_path, run_canary, train_step (the code `python -m runtime` runs)
  ours-nondet  the same with deterministic = false
  ours-det+pairs  ours-det, then in the same process deterministic and not alternating in blocks
               (3 pairs of 8 steps), then CUDA kernel time of 3 steps each under the profiler
  ours-hf      the runtime with BUNDLER_FUSED=0 (its transformers+peft path), for the gain of fusing
  ours-eager   the fused path without torch.compile (BUNDLER_FUSED=eager), for the gain of compiling

MFU counts 4 x (linear-layer parameters, lm_head included) FLOPs per token for LoRA (forward, and
backward to the inputs only: frozen weights get no weight gradient) plus 12 x layers x hidden x seq
for attention (PaLM's convention, no causal discount), over the H200's dense bf16 spec 989 TFLOP/s.

usage: python bench/bench_gpu_trainers.py [size] [steps]       (size: 1b, 8b, tiny; default 1b 25)
env:   TRIALS=ours-det+pairs,plain,liger,compile,ours-nondet,ours-det  BATCH=8
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
from bench_gpu_runtime import (  # noqa: E402
    SIZES,
    TARGETS,
    adapter_digest,
    build_model,
    lora_spec,
    synthetic_tokens,
    train_spec,
)

SEQ, WARMUP = 1024, 5
BATCH = int(os.environ.get("BATCH", "8"))
PEAK_TFLOPS = 989.0  # H200 SXM dense bf16, datasheet; a large bf16 matmul measured ~790 here (KINDS.md)


def flops_per_token(size: str) -> float:
    h, layers, heads, kv, inter, vocab = SIZES[size]
    head_dim = h // heads
    linear = layers * (h * h * 2 + 2 * h * kv * head_dim + 3 * h * inter) + vocab * h
    return 4 * linear + 12 * layers * h * SEQ


def sync() -> None:
    import torch

    torch.cuda.synchronize()


def peer_loop(trial: str, size: str, steps: int) -> dict:
    """plain / liger / compile: the reference loop, model(input_ids, labels).loss."""
    import torch
    from peft import LoraConfig, get_peft_model

    if trial == "liger":
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama()  # RMSNorm, RoPE, SwiGLU, fused linear cross-entropy
    model, vocab = build_model(size, "cuda")
    torch.cuda.reset_peak_memory_stats()  # not the float32 init of the base model, for every trainer
    torch.manual_seed(42)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS))
    model.train()
    if trial == "compile":
        model = torch.compile(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    data = synthetic_tokens(steps, vocab, SEQ, BATCH)
    losses, t0 = [], 0.0
    for i in range(steps):
        if i == WARMUP:
            sync()
            t0 = time.perf_counter()
        x = data[i].cuda(non_blocking=True)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    sync()
    return finish(model, losses, time.perf_counter() - t0, steps)


def ours_setup(size: str, steps: int, deterministic: bool):
    import torch

    from bundler.runtime.canary import run_canary
    from bundler.runtime.determinism import configure_determinism
    from bundler.runtime.fastpath import enable_fused_path
    from bundler.runtime.modeling import apply_lora, resolve_precision
    from bundler.runtime.train import make_optimizer

    dev = torch.device("cuda")
    settings = configure_determinism(1234, deterministic=deterministic, device=dev)
    model, vocab = build_model(size, "cuda")
    torch.cuda.reset_peak_memory_stats()
    lora = lora_spec()
    wrapped = apply_lora(model, lora, init_seed=42, compute_dtype=resolve_precision("auto", dev))
    train = train_spec(steps)
    optimizer, scheduler = make_optimizer(wrapped, train)
    settings.update(enable_fused_path(wrapped, optimizer, deterministic=deterministic, quantized=False))
    wrapped.peft_model.train()
    t0 = time.perf_counter()
    settings.update(run_canary(wrapped, shape=(BATCH, SEQ), deterministic=deterministic))
    canary_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_canary(wrapped, shape=(BATCH, SEQ), deterministic=deterministic)  # again, kernels compiled
    settings["canary_warm_s"] = time.perf_counter() - t0
    return wrapped, optimizer, scheduler, vocab, settings, canary_s


def ours(size: str, steps: int, deterministic: bool, pairs: bool = False) -> dict:
    from bundler.runtime.train import train_step

    wrapped, optimizer, scheduler, vocab, settings, canary_s = ours_setup(size, steps, deterministic)
    data = synthetic_tokens(steps, vocab, SEQ, BATCH)
    losses, t0 = [], 0.0
    for i in range(steps):
        if i == WARMUP:
            sync()
            t0 = time.perf_counter()
        losses.append(train_step(wrapped, [(data[i], data[i])], optimizer, scheduler, max_grad_norm=1e9).loss)
    sync()
    result = finish(wrapped.peft_model, losses, time.perf_counter() - t0, steps)
    canary = settings.get("determinism_canary", {}).get("value")
    result.update(
        canary=canary,
        canary_wall_s=canary_s,
        canary_warm_s=settings["canary_warm_s"],
        claim=settings.get("deterministic_claim", {}).get("value"),
    )
    result["fused"] = settings.get("fused_path", {}).get("value")
    result["compile"] = settings.get("torch.compile", {}).get("value")
    if pairs:  # after the adapter hash: the pairs train on, but the bitwise check is already taken
        try:
            result["pairs"] = measure_pairs(wrapped, optimizer, scheduler, vocab)
        except Exception as error:  # noqa: BLE001 - keep the timed result whatever the profiler does
            print(f"pairs failed: {error!r}", file=sys.stderr)
    return result


def measure_pairs(wrapped, optimizer, scheduler, vocab: int, block: int = 8, pairs: int = 3) -> dict:
    """Determinism cost in one process: det/nondet blocks alternating, then profiled kernel time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from bundler.runtime.train import train_step

    data = synthetic_tokens(8, vocab, SEQ, BATCH)

    def run(n: int, deterministic: bool) -> float:
        torch.use_deterministic_algorithms(deterministic)
        sync()
        t0 = time.perf_counter()
        for i in range(n):
            train_step(wrapped, [(data[i % 8], data[i % 8])], optimizer, scheduler, max_grad_norm=1e9)
        sync()
        return (time.perf_counter() - t0) / n

    run(3, False)
    ratios, det_ms, nondet_ms = [], [], []
    for _ in range(pairs):
        d, n = run(block, True), run(block, False)
        det_ms.append(1000 * d)
        nondet_ms.append(1000 * n)
        ratios.append(d / n)
    kernel_ms = {}
    for deterministic in (True, False):
        torch.use_deterministic_algorithms(deterministic)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            run(3, deterministic)
        kernel_ms[str(deterministic)] = sum(e.device_time_total for e in prof.key_averages()) / 1000 / 3
        top = prof.key_averages().table(sort_by="device_time_total", row_limit=16, max_name_column_width=60)
        print(f"=== profile deterministic={deterministic}\n{top}", file=sys.stderr)
    torch.use_deterministic_algorithms(True)
    return {
        "det_ms": det_ms,
        "nondet_ms": nondet_ms,
        "ratios": ratios,
        "kernel_ms_per_step": kernel_ms,
        "median_ratio": statistics.median(ratios),
    }


def finish(model, losses: list[float], seconds: float, steps: int) -> dict:
    import torch

    return {
        "tok_s": (steps - WARMUP) * BATCH * SEQ / seconds,
        "step_ms": 1000 * seconds / (steps - WARMUP),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "losses": losses,
        "adapter_sha": adapter_digest(model),
    }


def child(trial: str, size: str, steps: int, out: str) -> None:
    if trial in ("plain", "liger", "compile"):
        result = peer_loop(trial, size, steps)
    else:
        result = ours(size, steps, deterministic=trial != "ours-nondet", pairs=trial == "ours-det+pairs")
    result.update(trial=trial.removesuffix("+pairs"), size=size)
    Path(out).write_text(json.dumps(result))


def versions() -> str:
    import importlib.metadata as md

    import torch

    found = []
    for name in ("torch", "transformers", "peft", "triton", "liger-kernel"):
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            found.append(f"{name} absent")
    gpu, cuda = torch.cuda.get_device_name(0), torch.version.cuda
    return f"{gpu}; {', '.join(found)}; CUDA {cuda}; python {sys.version.split()[0]}"


def main() -> None:
    size = sys.argv[1] if len(sys.argv) > 1 else "1b"
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    default = "ours-det+pairs,plain,liger,compile,ours-nondet,ours-det"
    trials = os.environ.get("TRIALS", default).split(",")
    outdir = Path(os.environ.get("OUT", "/tmp"))
    results = []
    for index, trial in enumerate(trials):
        env = {**os.environ, "PYTHONHASHSEED": "0", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
        if trial in ("ours-hf", "ours-eager"):
            env["BUNDLER_FUSED"] = "0" if trial == "ours-hf" else "eager"
        out = outdir / f"{size}_{index}_{trial.replace('+', '_')}.json"
        started = time.perf_counter()
        cmd = [sys.executable, __file__, "--child", trial, size, str(steps), str(out)]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if run.returncode:
            print(f"{trial} failed ({wall:.0f}s):\n{run.stderr[-2500:]}", flush=True)
            continue
        if trial.endswith("+pairs"):
            print(run.stderr[-7000:], flush=True)
        results.append({**json.loads(out.read_text()), "wall_s": wall})
        r = results[-1]
        print(
            f"{trial:11s} {wall:5.0f}s tok/s={r['tok_s']:.0f} peak={r['peak_gib']:.1f}GiB "
            f"sha={r['adapter_sha'][:12]} loss0={r['losses'][0]:.6f} lossN={r['losses'][-1]:.6f}",
            flush=True,
        )
    (outdir / f"{size}_summary.json").write_text(json.dumps(results, indent=1))
    report(results, size, steps)


def report(results: list[dict], size: str, steps: int) -> None:
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["trial"], []).append(r)
    per_token = flops_per_token(size)
    print(
        f"\n{versions()}\nsize {size}, seq {SEQ}, batch {BATCH}, LoRA r=16 on 7 linear layers, {steps} steps "
        f"({WARMUP} warm-up not timed); MFU: {per_token / 1e9:.2f} GFLOP/token over {PEAK_TFLOPS:.0f} TFLOP/s\n"
    )
    base = statistics.mean(r["tok_s"] for r in by["plain"]) if "plain" in by else None
    print("| trainer | runs | step ms | tokens/s | vs plain | peak GiB | MFU | adapters bitwise equal |")
    print("|---|---|---|---|---|---|---|---|")
    for trial in ("plain", "liger", "compile", "ours-hf", "ours-eager", "ours-det", "ours-nondet"):
        rs = by.get(trial)
        if not rs:
            continue
        tok = statistics.mean(r["tok_s"] for r in rs)
        same = (
            "-" if len(rs) < 2 else str(len({r["adapter_sha"] for r in rs}) == 1 and rs[0]["losses"] == rs[1]["losses"])
        )
        vs = f"{tok / base:.2f}x" if base else "-"
        step = statistics.mean(r["step_ms"] for r in rs)
        mfu = 100 * tok * per_token / PEAK_TFLOPS / 1e12
        peak = max(r["peak_gib"] for r in rs)
        print(f"| {trial} | {len(rs)} | {step:.1f} | {tok / 1000:.1f}k | {vs} | {peak:.1f} | {mfu:.1f}% | {same} |")
    peers = [statistics.mean(r["tok_s"] for r in by[t]) for t in ("liger", "compile") if t in by]
    if peers and "ours-det" in by:
        det = statistics.mean(r["tok_s"] for r in by["ours-det"])
        print(f"\nours-det / best peer = {det / max(peers):.3f}" + (f"; / plain = {det / base:.3f}" if base else ""))
        if base:
            mem = max(r["peak_gib"] for r in by["ours-det"]) / max(r["peak_gib"] for r in by["plain"])
            print(f"ours-det peak memory / plain = {mem:.3f}")
        first = by["ours-det"][0]
        print(
            f"canary: {first.get('canary')} (wall {first.get('canary_wall_s', 0):.2f}s incl. compile, "
            f"{first.get('canary_warm_s', 0):.3f}s warm); claim={first.get('claim')}"
        )
    for r in [r["pairs"] for r in by.get("ours-det", []) if "pairs" in r]:
        k = r["kernel_ms_per_step"]
        print(
            f"determinism cost, {len(r['ratios'])} interleaved pairs: median det/nondet step time = "
            f"{r['median_ratio']:.4f} (ratios {[round(x, 4) for x in r['ratios']]}); CUDA kernel ms/step "
            f"det {k['True']:.1f} vs nondet {k['False']:.1f} ({100 * (k['True'] / k['False'] - 1):+.2f}%)"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, trial_, size_, steps_, out_ = sys.argv
        child(trial_, size_, int(steps_), out_)
    else:
        main()
