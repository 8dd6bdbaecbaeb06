"""The replay report: a terminal table, report.json, a loss-overlay PNG and a self-contained HTML page."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from bundler.bundle.atomic import atomic_write_bytes, atomic_write_text
from bundler.bundle.hashing import canonical_json
from bundler.paths import resource_dir

VERDICT_COLORS = {"IDENTICAL": "green", "EQUIVALENT": "yellow", "DIVERGED": "red"}
DIVERGENCE_COLOR = "#d62728"  # used for nothing else in the overlay, so the mark can be found in its pixels
REPORT_FILES = ("report.json", "loss_overlay.png", "report.html")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def check_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(check, recorded, replay, result) rows shared by the terminal table and the HTML page."""
    rows = []
    adapter = report["adapter"]
    if adapter.get("compared"):
        rows.append(
            (
                "adapter bytes (sha256)",
                _fmt(adapter["recorded_sha256"])[:16],
                _fmt(adapter["replay_sha256"])[:16],
                "equal" if adapter["bytes_equal"] else "differ",
            )
        )
        rows.append(
            (
                "adapter tensors (sha256)",
                _fmt(adapter["recorded_tensor_sha256"])[:16],
                _fmt(adapter["replay_tensor_sha256"])[:16],
                "equal" if adapter["tensors_equal"] else "differ",
            )
        )
    else:
        rows.append(("adapter", "-", "-", "not compared (partial replay)"))
    steps = report["steps"]
    rows.append(
        (
            "steps",
            str(steps["recorded"]),
            str(steps["replay"]),
            f"{steps['compared']} compared" + (f", {len(steps['missing'])} missing" if steps["missing"] else ""),
        )
    )
    for name, field in steps["fields"].items():
        if field["identical"]:
            result = "bitwise equal"
        else:
            result = (
                f"max rel {field['max_rel']:.3g} at step {field['max_rel_step']} (bound {field['bound']:g}); "
                f"first difference at step {field['first_difference_step']}"
            )
        rows.append((f"per-step {name}", "", "", result))
    for row in report["eval"]:
        if row["identical"]:
            result = "equal"
        elif row["abs"] is None:
            result = "missing on one side"
        else:
            result = f"|diff| {row['abs']:.3g} {'<=' if row['within'] else '>'} {row['bound']:g}"
        rows.append((f"eval {row['name']}", _fmt(row["recorded"]), _fmt(row["replay"]), result))
    return rows


def headline(report: dict[str, Any]) -> str:
    text = f"{report['verdict']} (expected {report['expected']})"
    if report["partial"]:
        text += f", PARTIAL: first {report['steps_compared']} of {report['steps_recorded']} steps"
    if report["divergence"]:
        text += f"; first divergence: {report['divergence']['detail']}"
    return text


def render_table(report: dict[str, Any]) -> None:
    """Print the report for a person on stdout (rich; plain when NO_COLOR or not a terminal)."""
    import os

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    out = Console(highlight=False, soft_wrap=True, no_color="NO_COLOR" in os.environ)
    color = VERDICT_COLORS[report["verdict"]]
    out.print(f"[bold {color}]{escape(report['verdict'])}[/]  {escape(headline(report).partition(' ')[2])}")
    out.print(f"bundle   {report['bundle_id']}")
    out.print(
        f"recorded {report['recorded_run'][:12]} ({report['recorded_runner']})   "
        f"replay {report['replay_run'][:12]} ({report['replay_runner']})"
    )
    table = Table(title="comparison", title_justify="left")
    for column in ("check", "recorded", "replay", "result"):
        table.add_column(column)
    for row in check_rows(report):
        table.add_row(*(escape(cell) for cell in row))
    out.print(table)
    differences = report["fingerprints"]["differences"]
    if differences:
        prints = Table(title="fingerprint differences", title_justify="left")
        for column in ("field", "recorded", "replay"):
            prints.add_column(column)
        for d in differences:
            prints.add_row(
                escape(d["field"] + ("" if d["affects_bitwise"] else " (informational)")),
                escape(_fmt(d["recorded"])),
                escape(_fmt(d["replay"])),
            )
        out.print(prints)
    for line in report["expectation"]:
        out.print(f"expected: {escape(line)}")
    for cause in report["causes"]:
        out.print(f"[{color}]likely cause:[/] {escape(cause)}")
    for note in report["notes"]:
        out.print(f"note: {escape(note)}")


def render_overlay_png(report: dict[str, Any]) -> bytes:
    """Recorded and replayed loss curves on one axis, their relative difference below, divergence marked."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = report["curves"]
    recorded = [(s, v) for s, v in curves["recorded"] if isinstance(v, (int, float))]
    replay = [(s, v) for s, v in curves["replay"] if isinstance(v, (int, float))]
    replayed = dict(replay)
    rel = [(s, abs(v - replayed[s]) / max(abs(v), abs(replayed[s]), 1e-30)) for s, v in recorded if s in replayed]
    divergence = report.get("divergence") or {}
    defaults = {k: v for k, v in matplotlib.rcParamsDefault.items() if k not in ("backend", "backend_fallback")}
    with matplotlib.rc_context(defaults):
        figure = Figure(figsize=(7.2, 5.4), dpi=100)
        FigureCanvasAgg(figure)
        top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
        if recorded:
            top.plot(
                [s for s, _ in recorded],
                [v for _, v in recorded],
                label="recorded train loss",
                color="#1f77b4",
                linewidth=2.5,
                alpha=0.6,
            )
        if replay:
            top.plot(
                [s for s, _ in replay],
                [v for _, v in replay],
                label="replay train loss",
                color="#ff7f0e",
                linestyle="--",
                linewidth=1.2,
            )
        for key, label, color in (
            ("recorded_eval", "recorded val loss", "#2ca02c"),
            ("replay_eval", "replay val loss", "#8c564b"),
        ):
            points = curves.get(key) or []
            if points:
                top.plot(
                    [s for s, _ in points],
                    [v for _, v in points],
                    label=label,
                    color=color,
                    marker="o",
                    linestyle="none",
                    markersize=5 if key == "recorded_eval" else 3,
                )
        step = divergence.get("step")
        if isinstance(step, int):
            for axes in (top, bottom):
                axes.axvline(step, color=DIVERGENCE_COLOR, linestyle="-", linewidth=1.5)
            top.annotate(
                f"first divergence: step {step} ({divergence.get('field')})",
                xy=(step, top.get_ylim()[1]),
                xytext=(4, -14),
                textcoords="offset points",
                color=DIVERGENCE_COLOR,
                fontsize=8,
            )
        if report["partial"]:
            top.axvspan(
                report["steps_compared"] + 0.5,
                max([s for s, _ in recorded] or [0]) + 0.5,
                color="#999999",
                alpha=0.15,
                label="not replayed (--steps)",
            )
        top.set_ylabel("loss")
        top.set_title(
            f"replay: {report['verdict']} (expected {report['expected']})" + (" — partial" if report["partial"] else "")
        )
        top.grid(True, alpha=0.3)
        top.legend(fontsize=8)
        if rel:
            bottom.plot([s for s, _ in rel], [v for _, v in rel], color="#9467bd", marker=".", linewidth=1)
        bottom.axhline(
            report["tolerance"]["loss"],
            color="#7f7f7f",
            linestyle="--",
            linewidth=1,
            label=f"loss bound {report['tolerance']['loss']:g}",
        )
        bottom.set_ylim(bottom=0)
        bottom.set_ylabel("|rel diff|")
        bottom.set_xlabel("optimizer step")
        bottom.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        bottom.grid(True, alpha=0.3)
        bottom.legend(fontsize=8)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def render_html(report: dict[str, Any], png: bytes) -> str:
    """The report as one self-contained page (the PNG inlined as a data URI), autoescaped by jinja2."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
        autoescape=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("report.html.j2").render(
        report=report,
        headline=headline(report),
        rows=check_rows(report),
        color=VERDICT_COLORS[report["verdict"]],
        png_data_uri="data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        fields=list(dict.fromkeys([*report["fingerprints"]["recorded"], *report["fingerprints"]["replay"]])),
        fmt=_fmt,
    )


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write report.json, loss_overlay.png and report.html into `out_dir` (each atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = render_overlay_png(report)
    paths = {name: out_dir / name for name in REPORT_FILES}
    atomic_write_text(paths["report.json"], canonical_json(report))
    atomic_write_bytes(paths["loss_overlay.png"], png)
    atomic_write_text(paths["report.html"], render_html(report, png))
    return paths
