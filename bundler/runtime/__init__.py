"""The trainer that runs inside the locked environment: `python -m runtime <recipe_dir> <out_dir>`.

This package is copied into every bundle as `recipe/runtime/`, so it imports nothing from the rest
of bundler; it needs torch, transformers, peft, safetensors and numpy (see requirements.txt).

    __main__.py     entry point: paths and env vars in, exit code and BUNDLER_* lines out
    recipe.py       reads config.toml/model.json/dataset.json/splits.json; verifies every hash
    determinism.py  the one function that sets every seed and flag (recorded in env.json)
    envinfo.py      the one function that captures the environment
    data.py         examples by split ID, templating, tokenizers, seeded batches
    packing.py      `train.packing`: whole examples per row, positions restarted, per-document attention
    modeling.py     model load, precision, LoRA (CPU-seeded init), chunked cross-entropy
    train.py        the training step and loop; writes metrics.jsonl/results.json/adapter
    fastpath.py     chooses the fused path (default on CUDA for Llama) and its chunked fused loss
    fused_decoder.py  the decoder from peft's own weights in fused ops; attention for rows or documents
    lora_linear.py  projections sharing an input as one product with their LoRA folded in
    kernels.py      RMSNorm/RoPE/SwiGLU/loss chunk compiled by torch.compile, Inductor autotuning pinned
    canary.py       bit-exact self-test of this run's kernels before training on a GPU (env.json)
    evaluate.py     val/test loss and label scoring by log-likelihood
    tiny.py         `python -m runtime.tiny`: the tiny Llama-shaped model from a seed
    quant.py        `[lora] quantization = "4bit"`: NF4 base model via bitsandbytes (QLoRA)
    tracking.py     `[tracking]`: metrics also to MLflow or W&B; imported libraries only when configured
"""

RESULTS_SCHEMA = "bundler.results/1"
ENV_SCHEMA = "bundler.env/1"
