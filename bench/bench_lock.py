"""Benchmark locking the quickstart requirements: pip-compile vs uv, cold and warm; bundler lock cached.

Run: python bench/bench_lock.py   (resolves against PyPI and the machine's pip config; ~1 minute)
"cold" = empty resolver cache; "warm" = the resolver's own cache filled, bundler's lock cache empty;
"bundler cached" = a second `write_lock` with nothing changed. Ratios are against pip-compile cold.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bundler.recipe.config import EnvironmentConfig  # noqa: E402
from bundler.recipe.lock import write_lock  # noqa: E402

QUICKSTART = "torch==2.13.0\ntransformers\npeft\nsafetensors\nnumpy\n"


def timed_lock(root: Path, resolver: str, resolver_cache: Path, lock_cache: Path) -> tuple[float, bool]:
    project = root / "project"
    project.mkdir(exist_ok=True)
    (project / "requirements.in").write_text(QUICKSTART)
    os.environ["BUNDLER_CACHE"] = str(lock_cache)
    os.environ["XDG_CACHE_HOME"] = str(resolver_cache)  # pip-tools and pip cache here
    os.environ["UV_CACHE_DIR"] = str(resolver_cache / "uv")
    os.environ["PIP_CACHE_DIR"] = str(resolver_cache / "pip")
    env = EnvironmentConfig(image="debian-python-3.11", resolver=resolver)  # type: ignore[arg-type]
    started = time.perf_counter()
    result = write_lock(project, env)
    return time.perf_counter() - started, result.cached


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for resolver in ("pip-tools", "uv"):
            rcache = root / f"rc-{resolver}"
            cold, _ = timed_lock(root, resolver, rcache, root / f"lc-{resolver}-1")
            warm, _ = timed_lock(root, resolver, rcache, root / f"lc-{resolver}-2")
            cached, hit = timed_lock(root, resolver, rcache, root / f"lc-{resolver}-2")
            assert hit
            rows += [
                (f"{resolver} cold", cold),
                (f"{resolver} warm", warm),
                (f"bundler lock, nothing changed ({resolver})", cached),
            ]
            shutil.rmtree(rcache, ignore_errors=True)
    base = rows[0][1]
    print("| case | seconds | x pip-compile cold |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {seconds / base:.3f} |")


if __name__ == "__main__":
    main()
