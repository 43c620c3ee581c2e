"""Stage 5: report.html, one self-contained page with the figures and tables of a pipeline run.

`clsp.report.html.build_report(run_dir)` reads the run directory (clsp.layout.RunLayout) and writes
run_dir/report.html. This package's modules import each other downward only (html <- figures, paper,
study), and nothing lives here, so that importing one of them never runs another.
"""
