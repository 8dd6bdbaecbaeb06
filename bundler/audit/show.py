"""`bundler inspect`: what a bundle holds, from its files alone (identity, source, splits, runs, hardware)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bundler.bundle.bag import RECIPE, RUNS, list_runs, open_bundle, read_bag_info
from bundler.records import RecipeView, RunView, hardware_fingerprint


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def describe_run(bundle: Path, run_id: str) -> dict[str, Any]:
    run = RunView.read(bundle / RUNS / run_id)
    results, record = run.results, run.record
    return {
        "run_id": run_id,
        "runner": record.get("runner"),
        "finished": record.get("finished"),
        "adapter_sha256": results.get("adapter_sha256"),
        "steps": results.get("steps"),
        "final_train_loss": results.get("final_train_loss"),
        "eval": results.get("eval"),
        "hardware": hardware_fingerprint(run.env),
        "drift": record.get("drift") or [],
        "published": run.published,
    }


def describe_bundle(bundle: Path) -> dict[str, Any]:
    open_bundle(bundle)
    recipe = bundle / RECIPE
    info = read_bag_info(bundle)
    view = RecipeView.at(recipe)
    splits = _json(recipe / "splits.json") or {}
    try:
        # deferred: it loads pydantic, which callers that never reach this line should not pay for
        from bundler.recipe.splits import summarize

        split_summary = summarize(splits) if splits else {}
    except ImportError:
        split_summary = {name: {"count": s.get("count")} for name, s in splits.get("splits", {}).items()}
    return {
        "schema": "bundler.inspect/1",
        "bundle": str(bundle),
        "bundle_id": info.get("Bundle-Id"),
        "format": info.get("Bundle-Format"),
        "payload": info.get("Payload-Oxum"),
        "source": _json(recipe / "source.json"),
        "image": _json(recipe / "image.lock.json"),
        "model": {k: v for k, v in (_json(recipe / "model.json") or {}).items() if k != "files"},
        "seeds": view.seeds(),
        "config": view.config,
        "splits": split_summary,
        "runs": [describe_run(bundle, run_id) for run_id in list_runs(bundle)],
    }


def render_description(description: dict[str, Any]) -> None:
    """Print the description as tables on stdout (rich)."""
    from rich.console import Console
    from rich.table import Table

    out = Console(highlight=False, soft_wrap=True)
    source = description.get("source") or {}
    out.print(
        f"[bold]bundle[/] {description['bundle_id']}  ({description['format']}, payload {description['payload']})"
    )
    out.print(
        f"code    {source.get('commit', 'not recorded')}{' (dirty)' if source.get('dirty') else ''}  "
        f"{source.get('repo') or ''}"
    )
    image = description.get("image") or {}
    out.print(f"image   {image.get('reference', 'not recorded')}@{image.get('digest', '?')}")
    model = description.get("model") or {}
    out.print(f"model   {model.get('id')} @ {model.get('revision')} ({model.get('source')})")
    out.print("seeds   " + ", ".join(f"{k}={v}" for k, v in description["seeds"].items()))
    splits = description.get("splits") or {}
    if splits:
        _render_splits(out, splits)
    runs = Table(title="runs", title_justify="left")
    for column in ("run", "runner", "device", "steps", "train loss", "eval", "adapter sha256"):
        runs.add_column(column)
    for run in description["runs"]:
        evals = ", ".join(f"{k} {v:.4g}" for k, v in (run.get("eval") or {}).items() if isinstance(v, (int, float)))
        loss = run.get("final_train_loss")
        runs.add_row(
            run["run_id"][:12],
            str(run.get("runner")),
            str(run["hardware"].get("device")),
            str(run.get("steps")),
            f"{loss:.4f}" if isinstance(loss, float) else "-",
            evals,
            (run.get("adapter_sha256") or "-")[:16],
        )
    out.print(runs)
    for run in description["runs"]:
        hardware = ", ".join(f"{k}={v}" for k, v in run["hardware"].items() if v)
        out.print(f"[dim]{run['run_id'][:12]} ran on: {hardware}[/]")


def _render_splits(out: Any, summary: dict[str, Any]) -> None:
    from rich.table import Table

    splits = summary.get("splits", summary)
    table = Table(title="splits", title_justify="left")
    table.add_column("split")
    table.add_column("examples", justify="right")
    table.add_column("labels")
    for name in ("train", "val", "test"):
        entry = splits.get(name) or {}
        labels = entry.get("labels") or {}
        table.add_row(name, str(entry.get("count")), ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    out.print(table)
    leakage = summary.get("leakage") or {}
    if leakage:
        out.print(
            "dedupe/leakage: "
            + ", ".join(f"{k} {v}" for k, v in sorted(leakage.items()) if not isinstance(v, (dict, list)))
        )
