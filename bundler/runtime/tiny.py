"""`python -m runtime.tiny <out_dir> <tiny_config_json>`: the tiny Llama-shaped model.

Writes config.json and model.safetensors (CPU, float32). The same config and seed give the same
bytes, so model.json can record their sha256 and any machine can re-make the model.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any


def make_tiny_model(out: Path, tiny: dict[str, Any]) -> list[str]:
    """Materialise the model into `out` atomically; return its file names."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=tiny.get("hidden_size", 64),
        intermediate_size=tiny.get("intermediate_size", 128),
        num_hidden_layers=tiny.get("num_hidden_layers", 2),
        num_attention_heads=tiny.get("num_attention_heads", 4),
        num_key_value_heads=tiny.get("num_key_value_heads", 2),
        vocab_size=tiny.get("vocab_size", 512),
        max_position_embeddings=tiny.get("max_position_embeddings", 512),
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    # The one place outside determinism.py that touches global RNG: transformers initialises weights
    # from it. fork_rng restores the caller's state afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(tiny.get("seed", 0)))
        model = LlamaForCausalLM(config).to(torch.float32)
    state = {k: v.detach().contiguous() for k, v in sorted(model.state_dict().items())}
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config.to_dict(), sort_keys=True, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return sorted(p.name for p in out.iterdir())


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python -m runtime.tiny <out_dir> <tiny_config_json>", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(make_tiny_model(Path(sys.argv[1]), json.loads(sys.argv[2]))))
