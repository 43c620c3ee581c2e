"""`clsp report RUN_DIR`: (re)write the HTML report of a pipeline run directory."""

from __future__ import annotations

from dataclasses import dataclass

from clsp.config import check


@dataclass
class ReportConfig:
    run_dir: str = ""                 # the out_dir of a `clsp pipeline` run

    def __post_init__(self) -> None:
        check(bool(self.run_dir), "run_dir", "must name a pipeline run directory")


def register(subparsers) -> None:
    from clsp.cli import Flag, add_command, config_command

    parser = add_command(subparsers, "report",
                         description="Write RUN_DIR/report.html: one self-contained page (figures embedded) with the "
                                     "results table, positives, training curves, hardness, t-SNE, timings and the run's "
                                     "config.")
    config_command(parser, ReportConfig, run, positionals={"RUN_DIR": Flag("run_dir", "the out_dir of a `clsp pipeline` run")},
                   examples=["clsp report runs/demo"])


def run(cfg: ReportConfig) -> int:
    from clsp.report.html import build_report

    path = build_report(cfg.run_dir)
    print(f"report: {path}")
    return 0
