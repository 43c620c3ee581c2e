"""`clsp report RUN_DIR`: (re)write the HTML report of a pipeline run directory."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="write RUN_DIR/report.html from a pipeline run directory",
                                   description="Write RUN_DIR/report.html: one self-contained page (figures embedded) "
                                               "with the results table, positives, training curves, hardness, t-SNE, "
                                               "timings and the run's config.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the out_dir of a `clsp pipeline` run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clsp.report import build_report

    path = build_report(args.run_dir)
    print(f"report: {path}")
    return 0
