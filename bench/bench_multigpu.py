"""Data-parallel training on 1 and 2 GPUs at the 1B Llama shape: scaling, bitwise identity, equivalence, gradient sum.

Every trial is a fresh set of processes (`python -m torch.distributed.run --standalone` for 2 GPUs, plain
python for 1) that runs bundler.runtime's own code, as `python -m runtime` does: distributed.start_world,
configure_determinism, apply_lora, distributed.seed_rank, make_optimizer and train_step (each rank takes its
fixed rows of the global batch; gradients summed in rank order), with the fused path the runtime picks
(compiled on CUDA; BUNDLER_FUSED=0|eager|1 overrides, as for the runtime). Model: Llama-shaped 1B from a config under
seed 1234 (hidden 2048, 16 layers, 32 heads, 8 KV heads, intermediate 8192, vocab 128256), bf16 base, LoRA
r=16 alpha 32 on q/k/v/o/gate/up/down, AdamW, seq 1024, seeded random tokens, loss on every token.

Trials (TRIALS to choose; by default all, in this order, the most needed first):
  one_b8       1 GPU, batch 8                    the scaling baseline
  two_a/two_b  2 GPUs, 8 a GPU (global 16)       scaling; the two must give identical adapters and losses
  two_ar       as two_a, gradients by NCCL all_reduce instead of the rank-ordered sum (cost and bits)
  one_b16      1 GPU, batch 16 (global 16)       same global batch as two_a: equivalent within replay's bounds
  two_nd, one_b16_nd   the same pair with LoRA dropout 0 (summation order the only difference)
Prints one table and the checks; writes $OUT/bench_multigpu.json (and each trial's JSON).

usage: python bench/bench_multigpu.py [steps]              (default 30; the first 5 are not timed)
env:   BENCH_DEVICE=cuda|cpu (cpu: gloo, a tiny shape: a smoke test only)  TRIALS=one_b8,two_a,...
       BUDGET_S=420 (a trial that would likely end after this, judged by the longest so far, is skipped)
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPES = {
    # name: hidden, layers, heads, kv_heads, intermediate, vocab, seq, per-GPU batch
    "1b": (2048, 16, 32, 8, 8192, 128256, 1024, 8),
    "tiny": (64, 2, 4, 2, 128, 512, 64, 2),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TRIALS = {
    # name: (processes, global batch in per-GPU batches, reduction, LoRA dropout)
    "one_b8": (1, 1, "ordered", 0.05),
    "two_a": (2, 2, "ordered", 0.05),
    "one_b16": (1, 2, "ordered", 0.05),
    "two_b": (2, 2, "ordered", 0.05),
    "two_ar": (2, 2, "allreduce", 0.05),
    "two_nd": (2, 2, "ordered", 0.0),
    "one_b16_nd": (1, 2, "ordered", 0.0),
}
# What every launched process gets, as the runtime's launcher sets it: NVLink multicast (NVLS) off.
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
TOLERANCE = {"loss": 1e-3, "grad_norm": 1e-2}  # bundler.audit.replay.Tolerance's defaults (checked in main)


# --- one trial, in every rank ---


def child(spec: dict) -> None:
    import torch
    import torch.distributed as dist

    sys.path.insert(0, str(REPO))
    from bundler.runtime import distributed
    from bundler.runtime.determinism import configure_determinism
    from bundler.runtime.fastpath import enable_fused_path
    from bundler.runtime.modeling import apply_lora, resolve_precision
    from bundler.runtime.specs import TrainSpec
    from bundler.runtime.train import make_optimizer, train_step

    hidden, layers, heads, kv, inter, vocab, seq, per_gpu = SHAPES[spec["shape"]]
    device, steps, warmup = torch.device(spec["device"]), spec["steps"], spec["warmup"]
    global_batch = per_gpu * spec["batch_units"]
    # The settings the GPU numbers in bench/RESULTS.md were measured with (constant lr, no warmup).
    train = TrainSpec(
        seed=1234, max_steps=steps, batch_size=global_batch, grad_accum=1, learning_rate=2e-4, scheduler="constant",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, max_seq_len=seq, loss_on_response_only=False,
        packing=False, eval_every=0, device=spec["device"], precision="auto", deterministic=True, num_processes=1,
    )  # fmt: skip
    world = distributed.start_world(train, device, seed=1234)
    settings = configure_determinism(1234, deterministic=True, device=device)
    if spec["reduction"] == "allreduce":

        def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
            total = tensor.clone()
            dist.all_reduce(total)
            return total

        if not hasattr(distributed, "_gather_sum"):
            raise SystemExit("bundler.runtime.distributed has no _gather_sum to swap for all_reduce: update two_ar")
        distributed._gather_sum = all_reduce_sum  # the one function sum_across_ranks reduces with
    reduce_times: list[float] = []
    ordered_sum = distributed.sum_across_ranks

    def timed_sum(*args):  # synchronised on both sides so the collective's time is its own
        sync(device)
        started = time.perf_counter()
        result = ordered_sum(*args)
        sync(device)
        reduce_times.append(time.perf_counter() - started)
        return result

    distributed.sum_across_ranks = timed_sum

    from bench_gpu_runtime import llama_model, lora_spec

    base = llama_model(SHAPES[spec["shape"]], device.type)
    lora = lora_spec(dropout=spec["dropout"])
    model = apply_lora(base, lora, init_seed=42, compute_dtype=resolve_precision("auto", device))
    optimizer, scheduler = make_optimizer(model, train)
    settings.update(enable_fused_path(model, optimizer, deterministic=True, quantized=False))
    distributed.seed_rank(settings)
    model.peft_model.train()
    data = torch.randint(0, vocab, (steps, global_batch, seq), generator=torch.Generator().manual_seed(7))
    losses, norms, started = [], [], None
    for step in range(steps):
        if step == warmup:
            sync(device)
            started, reduce_times[:] = time.perf_counter(), []
        stats = train_step(model, [(data[step], data[step])], optimizer, scheduler, max_grad_norm=1.0)
        losses.append(stats.loss)
        norms.append(stats.grad_norm)
    sync(device)
    seconds = time.perf_counter() - started
    digest = hashlib.sha256()
    for name, param in sorted(model.peft_model.named_parameters()):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().numpy().tobytes())
    shas = [digest.hexdigest()]
    if world.size > 1:
        shas = [None] * world.size
        dist.all_gather_object(shas, digest.hexdigest())
    if world.is_main:
        timed = steps - warmup
        result = {
            **spec,
            "world_size": world.size,
            "global_batch": global_batch,
            "tok_s": timed * global_batch * seq / seconds,
            "step_ms": 1000 * seconds / timed,
            "reduce_ms": 1000 * statistics.mean(reduce_times) if reduce_times else 0.0,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
            "losses": losses,
            "grad_norms": norms,
            "adapter_sha": shas[0],
            "ranks_agree": len(set(shas)) == 1,
            "nccl": ".".join(map(str, torch.cuda.nccl.version())) if device.type == "cuda" else None,
            "fused_path": (settings["fused_path"]["value"] or {"mode": "off"})["mode"],
        }
        Path(spec["out"]).write_text(json.dumps(result))
    if world.size > 1:
        # Leave together: a rank that exits while the other is still in gloo's threads aborts it
        # ("terminate called without an active exception", seen 2 in 3 CPU runs without this).
        dist.barrier()


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# --- the driver ---


def run_trial(name: str, shape: str, steps: int, device: str, out: Path) -> dict | None:
    processes, units, reduction, dropout = TRIALS[name]
    spec = {
        "trial": name,
        "shape": shape,
        "steps": steps,
        "warmup": min(5, steps // 4),
        "batch_units": units,
        "reduction": reduction,
        "dropout": dropout,
        "device": device,
        "out": str(out / f"bench_multigpu_{name}.json"),
    }
    env = {**os.environ, **NO_MULTICAST, "PYTHONHASHSEED": "0", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    env.update({"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"})  # one machine: the loopback device
    if device == "cpu":
        env["OMP_NUM_THREADS"] = "1"
    if processes == 1:
        env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
        command = [sys.executable, __file__, "--child", json.dumps(spec)]
    else:
        launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
        command = [sys.executable, *launch, __file__, "--child", json.dumps(spec)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as timeout:
        print(f"{name} TIMED OUT after 300 s:\n{str(timeout.stderr or '')[-3000:]}", flush=True)
        return None
    if done.returncode or not Path(spec["out"]).is_file():
        print(f"{name} FAILED (exit {done.returncode}):\n{done.stdout[-1500:]}{done.stderr[-3000:]}", flush=True)
        return None
    return json.loads(Path(spec["out"]).read_text())


def max_relative(a: list[float], b: list[float]) -> float:
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        scale = max(abs(x), abs(y))
        worst = max(worst, abs(x - y) / scale if scale else 0.0)
    return worst


def versions() -> str:
    import importlib.metadata as md

    import torch

    names = ("torch", "transformers", "peft", "accelerate")
    found = ", ".join(f"{n} {md.version(n)}" for n in names)
    gpu = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU"
    return f"{gpu}; {found}; CUDA {torch.version.cuda}; python {sys.version.split()[0]}"


def checks(by: dict[str, dict]) -> dict[str, object]:
    """The issue's targets, from whichever trials ran."""
    found: dict[str, object] = {}
    twos = [by[n] for n in ("two_a", "two_b") if n in by]
    if "one_b8" in by and twos:
        found["scaling_2gpu_vs_1gpu"] = statistics.median(t["tok_s"] for t in twos) / by["one_b8"]["tok_s"]
    if len(twos) == 2:
        found["two_runs_adapters_bitwise_equal"] = twos[0]["adapter_sha"] == twos[1]["adapter_sha"]
        found["two_runs_losses_identical_every_step"] = twos[0]["losses"] == twos[1]["losses"]
        found["ranks_agree"] = all(t["ranks_agree"] for t in twos)
    if "two_ar" in by and twos:
        ordered, allreduce = twos[0], by["two_ar"]
        found["allreduce_bitwise_equal_to_ordered"] = allreduce["adapter_sha"] == ordered["adapter_sha"] and (
            allreduce["losses"] == ordered["losses"]
        )
        found["grad_sum_ms_ordered"] = statistics.median(t["reduce_ms"] for t in twos)
        found["grad_sum_ms_allreduce"] = allreduce["reduce_ms"]
        found["allreduce_ranks_agree"] = allreduce["ranks_agree"]
    for two, one, label in (("two_a", "one_b16", "dropout"), ("two_nd", "one_b16_nd", "no_dropout")):
        if two in by and one in by:
            loss = max_relative(by[two]["losses"], by[one]["losses"])
            norm = max_relative(by[two]["grad_norms"], by[one]["grad_norms"])
            found[f"one_vs_two_same_global_batch_{label}"] = {
                "max_rel_loss": loss,
                "max_rel_grad_norm": norm,
                "within_replay_tolerance": loss <= TOLERANCE["loss"] and norm <= TOLERANCE["grad_norm"],
                "adapters_bitwise_equal": by[two]["adapter_sha"] == by[one]["adapter_sha"],
            }
    return found


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    device = os.environ.get("BENCH_DEVICE", "cuda")
    shape = "1b" if device == "cuda" else "tiny"
    names = os.environ.get("TRIALS", ",".join(TRIALS)).split(",")
    budget = float(os.environ.get("BUDGET_S", "420"))
    out = Path(os.environ.get("OUT", "/tmp"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        sys.path.insert(0, str(REPO))
        from bundler.audit.replay import Tolerance

        assert {k: getattr(Tolerance(), k) for k in TOLERANCE} == TOLERANCE, "replay's tolerances changed"
    except ImportError:
        pass  # the device has no bundler dependencies; the constants above are replay's defaults
    started, by, skipped = time.perf_counter(), {}, []
    for name in names:
        longest = max((r["wall_s"] for r in by.values()), default=0.0)
        if time.perf_counter() - started + longest > budget:  # it would likely not finish within BUDGET_S
            skipped.append(name)
            continue
        t0 = time.perf_counter()
        result = run_trial(name, shape, steps, device, out)
        if result:
            result["wall_s"] = time.perf_counter() - t0
            by[name] = result
            print(f"{name:11s} {result['tok_s']:9.0f} tok/s  sha {result['adapter_sha'][:16]}  {result['wall_s']:.0f}s",
                  flush=True)  # fmt: skip
        write_summary(out, shape, steps, by, skipped)  # after every trial: a killed run keeps what it measured
    print_table(shape, steps, by)
    for key, value in checks(by).items():
        print(f"{key}: {json.dumps(value)}")
    if skipped:
        print(f"skipped (BUDGET_S={budget:.0f} would be exceeded): {', '.join(skipped)}")


def write_summary(out: Path, shape: str, steps: int, by: dict[str, dict], skipped: list[str]) -> None:
    summary = {"shape": shape, "steps": steps, "trials": by, "checks": checks(by), "skipped": skipped,
               "tolerance": TOLERANCE}  # fmt: skip
    (out / "bench_multigpu.json").write_text(json.dumps(summary, indent=2, sort_keys=True))


def print_table(shape: str, steps: int, by: dict[str, dict]) -> None:
    hidden, layers, _, _, _, vocab, seq, per_gpu = SHAPES[shape]
    print(f"\n{versions()}\nshape {shape} (hidden {hidden}, {layers} layers, vocab {vocab}), seq {seq}, "
          f"{per_gpu} a GPU, LoRA r=16 on {len(TARGETS)} linear layers, {steps} steps (first {min(5, steps // 4)} "
          "not timed), deterministic\n")  # fmt: skip
    base = by.get("one_b8", {}).get("tok_s")
    print("| trial | GPUs | global batch | gradient sum | dropout | fused | tokens/s | x one_b8 | step ms | sum ms |"
          " peak GiB |\n|---|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for name, r in by.items():
        ratio = f"{r['tok_s'] / base:.2f}x" if base else "-"
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        layout = f"{r['world_size']} | {r['global_batch']} | {r['reduction']} | {r['dropout']} | {r['fused_path']}"
        print(f"| {name} | {layout} | {r['tok_s'] / 1000:.1f}k | {ratio} | {r['step_ms']:.0f} | "
              f"{r['reduce_ms']:.2f} | {peak} |")  # fmt: skip
    print()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
    else:
        main()
