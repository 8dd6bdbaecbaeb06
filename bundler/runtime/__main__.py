"""`python -m runtime <recipe_dir> <out_dir>`: train one run; exit 0, 3 (bad input) or 1."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

from .contract import ERROR_PREFIX
from .errors import EXIT_INPUT, RecipeInputError, out_of_memory_error


def _error_line(error: RecipeInputError) -> None:
    print(ERROR_PREFIX + json.dumps(error.as_event(), sort_keys=True), flush=True)
    print(f"error: {error.message}\nhint: {error.hint}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m runtime <recipe_dir> <out_dir>", file=sys.stderr)
        return 2
    recipe_dir, out = Path(argv[0]), Path(argv[1])
    config: dict = {}
    try:
        from .recipe import load_recipe

        for var in ("BUNDLER_MODEL_DIR", "BUNDLER_DATA_DIR"):
            if not os.environ.get(var):
                raise RecipeInputError(f"{var} is not set", "the runner sets it to the read-only mount")
        recipe = load_recipe(recipe_dir)
        config = recipe.config
        from .distributed import is_launched, launch, requested_processes

        if (processes := requested_processes(recipe.train)) > 1 and not is_launched():
            return launch(processes, recipe.train, recipe_dir, out)  # each launched rank runs this module again
        max_steps = os.environ.get("BUNDLER_MAX_STEPS")
        from .train import run_training

        run_training(
            recipe,
            model_dir=Path(os.environ["BUNDLER_MODEL_DIR"]),
            data_dir=Path(os.environ["BUNDLER_DATA_DIR"]),
            out=out,
            runner=os.environ.get("BUNDLER_RUNNER", "host"),
            image_digest=os.environ.get("BUNDLER_IMAGE_DIGEST", ""),
            max_steps=int(max_steps) if max_steps else None,
        )
    except RecipeInputError as error:
        _error_line(error)
        return EXIT_INPUT
    except Exception as error:  # noqa: BLE001 - OOM has several exception types across torch versions
        if "out of memory" in str(error).lower() or type(error).__name__ == "OutOfMemoryError":
            _error_line(out_of_memory_error(config, str(error)))
            return EXIT_INPUT
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
