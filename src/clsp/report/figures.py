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
    ("SSL loss alone (train/loss_ssl)", ("train/loss_ssl",)),
    ("CLSP term alone, 2 - 2 cos(z1, z3) (train/loss_clsp)", ("train/loss_clsp",)),
    ("online linear probe, test top-1 (%)", ("test/probe_acc",)),
    ("kNN monitor, test top-1 (%)", ("test/knn_acc",)),
)
CLSP_PANEL = CURVE_PANELS[1][0]
VARIANT_STYLE = {"base": ("tab:blue", "-"), "clsp": ("tab:red", "-"), "aug": ("tab:green", "--"),
                 "oracle": ("tab:purple", ":")}


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
    """One row of panels (SSL loss, CLSP term, online probe, kNN) for one method; a line per variant. Each panel
    shows exactly the quantity its title names (the CLSP term only where a run has a third view).

    `runs` maps a run name (e.g. `simclr-clsp`) to (variant, CSV rows). Returns the PNG and the
    panels that no variant logged (the report states them as missing).
    """
    third_view = any(variant != "base" for variant, _ in runs.values())
    panels = [p for p in CURVE_PANELS if third_view or p[0] != CLSP_PANEL]   # no CLSP term without a third view
    fig = _new_figure(4 * len(panels), 3.2)
    axes = fig.subplots(1, len(panels), sharex=True)  # one step axis: a sparse monitor sits where it was measured
    missing = []
    for ax, (title, candidates) in zip(axes, panels):
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
        ax.tick_params(labelbottom=True)
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


def sweep_figure(setting: str, lines: dict[str, list[tuple[float, float, float | None]]],
                 references: dict[str, tuple[float, float | None]], agreement: list[tuple[float, float]],
                 chance: float | None, ceiling: float | None) -> bytes:
    """Accuracy against the swept value (left: a line per metric, mean +- std over seeds, with the baseline and
    +aug means as horizontal bands) beside the class agreement of each value's positives (right)."""
    fig = _new_figure(10, 3.6)
    left, right = fig.subplots(1, 2)
    for i, (label, points) in enumerate(lines.items()):
        points = sorted(points)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        errs = [p[2] or 0.0 for p in points]
        left.errorbar(xs, ys, yerr=errs, fmt="o-", color=f"C{i}", capsize=3, label=f"+ CLSP, {label}")
    for j, (label, (mean, std)) in enumerate(references.items()):
        left.axhline(mean, color=f"C{j + 3}", ls="--", lw=1, label=label)
        if std:
            left.axhspan(mean - std, mean + std, color=f"C{j + 3}", alpha=0.12)
    left.set_xlabel(f"swept setting: {setting}")
    left.set_ylabel("top-1 (%)")
    left.grid(alpha=0.3)
    left.legend(fontsize=7, frameon=False)
    if agreement:
        agreement = sorted(agreement)
        right.plot([a[0] for a in agreement], [a[1] for a in agreement], "o-", color="C0", label="stored candidates")
        if ceiling is not None:
            right.axhline(ceiling, color="green", ls="--", lw=1, label=f"real test images ({ceiling:.1f})")
        if chance is not None:
            right.axhline(chance, color="grey", ls=":", lw=1, label=f"chance ({chance:.1f})")
        right.set_ylim(0, 100)
        right.legend(fontsize=7, frameon=False)
    else:
        right.text(0.5, 0.5, "no positives evaluation", ha="center", va="center", transform=right.transAxes, color="gray")
    right.set_xlabel(f"swept setting: {setting}")
    right.set_ylabel("class agreement with the anchor (%)")
    right.grid(alpha=0.3)
    return png_bytes(fig)
