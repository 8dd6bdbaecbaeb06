"""`python -m runtime.check <recipe_dir> <adapter_dir> <out_dir>`: inference with a saved adapter.

Verifies the base model and dataset against the recipe, loads the adapter from `adapter_dir` onto the
base model, and writes the same `reference_outputs.jsonl` the run wrote at the end of training, plus
`env.json` (the environment this check ran in) and `check.json` (timings). Environment variables and
exit codes are those of `python -m runtime` (design section 9); nothing is trained.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

from .contract import ERROR_PREFIX
from .errors import EXIT_INPUT, RecipeInputError

CHECK_SCHEMA = "bundler.runtime-check/1"


def run_check(recipe_dir: Path, adapter_dir: Path, out: Path) -> dict[str, object]:
    """Load the base model and the adapter, write reference_outputs.jsonl into `out`."""
    from .data import check_fields, load_splits, load_tokenizer
    from .determinism import configure_determinism
    from .envinfo import capture_environment
    from .modeling import load_adapter, load_base_model, resolve_device, resolve_precision
    from .recipe import load_recipe, verify_files
    from .reference import REFERENCE_FILE, write_reference
    from .train import canonical, emit, write_atomic

    started = time.perf_counter()
    recipe = load_recipe(recipe_dir)
    model_dir = Path(os.environ["BUNDLER_MODEL_DIR"])
    data_dir = Path(os.environ["BUNDLER_DATA_DIR"])
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not (adapter_dir / name).is_file():
            raise RecipeInputError(f"{adapter_dir} has no {name}", "pass a directory holding a saved PEFT adapter")
    verify_files("model", model_dir, recipe.model.get("files", {}))
    verify_files("dataset", data_dir, recipe.dataset.get("files", {}))
    train = recipe.train
    device = resolve_device(train)
    seed = train.seed
    # The same flags as training (a second entry point, not a second policy): inference kernels
    # must be the deterministic ones the reference was computed with.
    determinism = configure_determinism(seed, deterministic=train.deterministic, device=device)
    splits = load_splits(data_dir, recipe.dataset, recipe.splits)
    check_fields(splits, recipe.data)
    tokenizer = load_tokenizer(model_dir)
    dtype = resolve_precision(train.precision, device)
    base = load_base_model(model_dir, dtype, device)
    model = load_adapter(base, adapter_dir, compute_dtype=dtype)
    loaded = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    sha, seconds, _summary = write_reference(
        out,
        model,
        splits,
        data=recipe.data,
        id_field=recipe.splits.get("id_field"),
        tokenizer=tokenizer,
        max_len=train.max_seq_len,
        batch_size=train.batch_size,
    )
    runner = os.environ.get("BUNDLER_RUNNER", "host")
    env = capture_environment(runner, os.environ.get("BUNDLER_IMAGE_DIGEST", ""), determinism)
    write_atomic(out / "env.json", canonical(env).encode())
    record = {
        "schema": CHECK_SCHEMA,
        "reference_outputs_sha256": sha,
        "reference_file": REFERENCE_FILE,
        "load_seconds": round(loaded - started, 3),
        "inference_seconds": round(seconds, 3),
        "device": device.type,
        "precision": str(dtype).removeprefix("torch."),
    }
    write_atomic(out / "check.json", canonical(record).encode())
    emit({"event": "done", "reference_outputs_sha256": sha})
    return record


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m runtime.check <recipe_dir> <adapter_dir> <out_dir>", file=sys.stderr)
        return 2
    try:
        for var in ("BUNDLER_MODEL_DIR", "BUNDLER_DATA_DIR"):
            if not os.environ.get(var):
                raise RecipeInputError(f"{var} is not set", "the runner sets it to the read-only mount")
        run_check(Path(argv[0]), Path(argv[1]), Path(argv[2]))
    except RecipeInputError as error:
        print(ERROR_PREFIX + json.dumps(error.as_event(), sort_keys=True), flush=True)
        print(f"error: {error.message}\nhint: {error.hint}", file=sys.stderr, flush=True)
        return EXIT_INPUT
    except Exception:  # noqa: BLE001 - reported as a crash with its traceback on stderr
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
