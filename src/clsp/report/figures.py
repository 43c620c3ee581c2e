"""The report's own figures (matplotlib, Agg, no pyplot state): training curves and stage timings.

Figures the stages draw themselves (anchors beside candidates, the w sweep, t-SNE, hardness) are
embedded as they are; this module draws what only the run directory as a whole can show: each
method's variants side by side over training, read from Lightning's CSV logs.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Sequence

from clsp.errors import UserError

# What a panel shows, and the CSV columns that hold it, most specific first. Lightning's CSVLogger
# writes one column per logged key; a row carries the values logged at its step, blanks elsewhere.
CURVE_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SSL loss (train/loss)", ("train/loss",)),
    ("online linear probe, top-1 (%)", ("test/probe_acc", "train/probe_acc")),
    ("kNN monitor, test top-1 (%)", ("test/knn_acc",)),
)
VARIANT_STYLE = {"base": ("tab:blue", "-"), "clsp": ("tab:red", "-"), "aug": ("tab:green", "--")}


def read_metrics_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a Lightning CSVLogger metrics.csv (empty when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path} is damaged ({e}); delete it (the report then shows its curves as missing)") from None
    for line, row in enumerate(rows, start=2):
        for column, value in row.items():
            if value in (None, ""):
                continue
            try:
                float(value)
            except (TypeError, ValueError):
                raise UserError(f"{path} line {line}: column {column!r} holds {str(value)[:40]!r}, not a number; the "
                                "file is damaged: delete it (the report then shows its curves as missing)") from None
    return rows


def find_column(rows: list[dict[str, str]], candidates: Sequence[str]) -> str | None:
    """The first candidate column present with at least one value."""
    columns = set(rows[0]) if rows else set()
    for name in candidates:
        if name in columns and any(r.get(name) not in (None, "") for r in rows):
            return name
    return None


def series(rows: list[dict[str, str]], column: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one column, skipping rows that did not log it and non-finite values."""
    xs, ys = [], []
    for i, row in enumerate(rows):
        value = row.get(column)
        if value in (None, ""):
            continue
        y = float(value)
        if not math.isfinite(y):
            continue
        step = row.get("step")
        xs.append(float(step) if step not in (None, "") else float(i))
        ys.append(y)
    return xs, ys


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def curves_figure(method: str, runs: dict[str, tuple[str, list[dict[str, str]]]]) -> tuple[bytes, list[str]]:
    """One row of panels (loss, online probe, kNN) for one method; a line per variant.

    `runs` maps a run name (e.g. `simclr-clsp`) to (variant, CSV rows). Returns the PNG and the
    panels that no variant logged (the report states them as missing).
    """
    fig = _new_figure(12, 3.2)
    axes = fig.subplots(1, len(CURVE_PANELS))
    missing = []
    for ax, (title, candidates) in zip(axes, CURVE_PANELS):
        drawn = False
        for name, (variant, rows) in runs.items():
            column = find_column(rows, candidates)
            if column is None:
                continue
            xs, ys = series(rows, column)
            if not xs:
                continue
            color, style = VARIANT_STYLE.get(variant, ("tab:gray", ":"))
            marker = "o" if len(xs) < 30 else None
            ax.plot(xs, ys, style, color=color, marker=marker, markersize=3, linewidth=1.2, label=name)
            drawn = True
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            missing.append(title)
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.suptitle(method, fontsize=11)
    return png_bytes(fig), missing


def timings_figure(seconds: dict[str, float]) -> bytes:
    """Horizontal bars of wall time per stage, in the given order from the top."""
    items = list(seconds.items())[::-1]
    fig = _new_figure(7, 0.35 * len(items) + 1.0)
    ax = fig.subplots()
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {format_seconds(v)}", va="center", fontsize=8)
    ax.set_xlabel("wall time (s)")
    ax.margins(x=0.15)
    return png_bytes(fig)


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
