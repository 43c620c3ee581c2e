"""Stage 5: report.html, one self-contained page with the figures and tables of a pipeline run.

`build_report(run_dir)` reads the run directory (docs/ARCHITECTURE.md) and writes run_dir/report.html.
"""

from __future__ import annotations


def build_report(run_dir):
    """Write run_dir/report.html and return its path (imports matplotlib only when called)."""
    from clsp.report.html import build_report as _build

    return _build(run_dir)


__all__ = ["build_report"]
