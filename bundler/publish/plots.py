"""The loss-curve PNG for the model card: same metrics, same bytes (for one matplotlib version)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any

FIGSIZE = (6.4, 3.6)
DPI = 100


def loss_points(
    metrics: Iterable[Mapping[str, Any]],
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """Split metrics.jsonl records into (train loss, eval loss) points per step, sorted by step."""
    train: dict[int, float] = {}
    evals: dict[int, float] = {}
    for record in metrics:
        step = record.get("step")
        if not isinstance(step, int):
            continue
        if isinstance(record.get("eval_loss"), (int, float)):
            evals[step] = float(record["eval_loss"])
        elif isinstance(record.get("loss"), (int, float)) and "split" not in record:
            train[step] = float(record["loss"])
    return sorted(train.items()), sorted(evals.items())


def render_loss_png(metrics: Iterable[Mapping[str, Any]], title: str = "") -> bytes | None:
    """Return the loss curve as PNG bytes, or None when the metrics hold no loss at all.

    Drawn with the object API on an Agg canvas (no pyplot: no global figure state, no GUI backend),
    under matplotlib's default rcParams (a user's matplotlibrc must not change the bytes), and saved
    without the "Software" tEXt chunk, which names the matplotlib version. PNG from Agg carries no
    timestamp, so nothing else varies between runs.
    """
    train, evals = loss_points(metrics)
    if not train and not evals:
        return None
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    defaults = {k: v for k, v in matplotlib.rcParamsDefault.items() if k not in ("backend", "backend_fallback")}
    with matplotlib.rc_context(defaults):
        figure = Figure(figsize=FIGSIZE, dpi=DPI)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        if train:
            axes.plot([s for s, _ in train], [v for _, v in train], label="train loss", color="#1f77b4")
        if evals:
            axes.plot(
                [s for s, _ in evals],
                [v for _, v in evals],
                label="validation loss",
                color="#d62728",
                marker="o",
                linestyle="--",
            )
        axes.set_xlabel("optimizer step")
        axes.set_ylabel("loss")
        if title:
            axes.set_title(title)
        axes.grid(True, alpha=0.3)
        axes.legend()
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()
