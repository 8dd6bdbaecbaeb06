"""Kernel-level profile of the runtime's train_step, deterministic vs not.

usage: PYTHONHASHSEED=0 CUBLAS_WORKSPACE_CONFIG=:4096:8 python bench/profile_gpu_runtime.py [size]
Prints the top CUDA kernels by total time for 3 steps in each mode, same model and data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
from bench_gpu_runtime import SEQ, build_model, lora_spec, synthetic_tokens, train_spec  # noqa: E402

from bundler.runtime.determinism import configure_determinism  # noqa: E402
from bundler.runtime.modeling import apply_lora  # noqa: E402
from bundler.runtime.train import make_optimizer, train_step  # noqa: E402


def main() -> None:
    size = sys.argv[1] if len(sys.argv) > 1 else "1b"
    dev = torch.device("cuda")
    configure_determinism(1234, deterministic=True, device=dev)
    model, vocab = build_model(size, "cuda")
    wrapped = apply_lora(model, lora_spec(), init_seed=42, compute_dtype=torch.bfloat16)
    optimizer, scheduler = make_optimizer(wrapped, train_spec(100))
    wrapped.peft_model.train()
    data = synthetic_tokens(12, vocab, SEQ, 8)
    for deterministic in (True, False):
        configure_determinism(1234, deterministic=deterministic, device=dev)
        for i in range(3):
            train_step(wrapped, [(data[i], data[i])], optimizer, scheduler, 1e9)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for i in range(3, 6):
                train_step(wrapped, [(data[i], data[i])], optimizer, scheduler, 1e9)
            torch.cuda.synchronize()
        print(f"=== deterministic={deterministic}")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))


if __name__ == "__main__":
    main()
