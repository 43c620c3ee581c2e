"""The report on run directories in the documented layout: rows, differences, paper columns, missing
pieces, escaping, self-containment; and the `clsp report` command."""

from __future__ import annotations

import html
import re

import pytest

from clsp.errors import UserError
from clsp.report import build_report
from clsp.report import paper
from report_helpers import make_run_dir


def results_rows(page: str) -> dict[str, list[str]]:
    """run name -> its results-table cells, as text."""
    table = re.search(r'<table id="results">(.*?)</table>', page, re.S).group(1)
    rows = {}
    for name, body in re.findall(r'<tr data-run="([^"]+)">(.*?)</tr>', table, re.S):
        rows[name] = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)]
    return rows


def test_results_table_has_a_row_per_variant_with_differences(tmp_path):
    run = make_run_dir(tmp_path, methods=("simclr", "moco"), variants=("base", "clsp", "aug"))
    page = build_report(run).read_text()
    rows = results_rows(page)
    assert list(rows) == ["simclr", "simclr-clsp", "simclr-aug", "moco", "moco-clsp", "moco-aug"]
    # columns: run, method, variant, knn best, k, knn200, linear, d knn, d linear, probe
    assert rows["simclr"][3] == "60.00" and rows["simclr"][6] == "70.00"
    assert rows["simclr-clsp"][7] == "+2.00" and rows["simclr-clsp"][8] == "+1.50"
    assert rows["moco-aug"][6] == "74.00" and rows["moco-aug"][8] == "+3.00"
    assert rows["simclr"][7] == "\u2014"  # a baseline has no difference to itself
    assert "paper linear" not in page  # not a paper preset


def test_paper_preset_sets_the_papers_numbers_beside_the_run(tmp_path):
    run = make_run_dir(tmp_path, paper="cifar100")
    rows = results_rows(build_report(run).read_text())
    assert rows["moco-clsp"][10] == f"{paper.LINEAR_TOP1['cifar100']['moco-clsp']:.2f}"
    assert rows["simclr"][11] == f"{paper.RELEASE_LINEAR_TOP1['cifar100']['simclr']:.2f}"


def test_missing_pieces_are_stated_not_dropped(tmp_path):
    run = make_run_dir(tmp_path, skip=("hardness", "anchors", "linear:moco-clsp", "curves:moco"))
    page = build_report(run).read_text()
    assert "Missing: anchors figure (figures/anchors.png)" in page
    assert "Missing: linear evaluation of moco-clsp" in page
    assert "Missing: hardness figure of simclr" in page
    assert "Missing: training log of moco" in page
    assert results_rows(page)["moco-clsp"][6] == "\u2014"


def test_text_from_data_is_escaped_and_figures_are_embedded(tmp_path):
    evil = "<script>alert(1)</script>"
    run = make_run_dir(tmp_path, config_extra={"dataset": {"name": evil}, "methods": ["simclr"], "variants": ["base"]})
    page = build_report(run).read_text()
    assert evil not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert len(re.findall(r"<script", page)) == 1  # only the report's own figure check
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert (run / "figures" / "curves_simclr.png").is_file()


def test_a_directory_that_is_not_a_run_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a pipeline run directory"):
        build_report(tmp_path)


def test_report_command_writes_and_prints_the_path(tmp_path, capsys):
    from clsp.cli import main

    run = make_run_dir(tmp_path, methods=("simclr",), variants=("base",))
    assert main(["report", str(run)]) == 0
    assert f"report: {run / 'report.html'}" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_transfer_table_in_the_configs_order_with_missing_sets_stated(tmp_path):
    import json

    run = make_run_dir(tmp_path, methods=("simclr",), variants=("clsp",), paper="transfer",
                       config_extra={"eval": {"knn": True, "linear": True, "transfer": ["dtd", "pets", "aircraft"]}})
    rows = [{"dataset": "dtd", "status": "ok", "top1": 41.5}, {"dataset": "pets", "status": "ok", "top1": 50.25},
            {"dataset": "aircraft", "status": "missing", "reason": "not found in /data"}]
    path = run / "eval" / "simclr-clsp" / "transfer" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"kind": "transfer", "results": {"sets": rows}}))
    page = build_report(run).read_text()
    table = re.search(r'<table id="transfer">(.*?)</table>', page, re.S).group(1)
    assert re.findall(r"<th>([^<]+)</th>", table) == ["run", "dtd", "pets", "aircraft"]
    ours = re.search(r"<tr><td><code>simclr-clsp</code></td>(.*?)</tr>", table, re.S).group(1)
    assert [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", ours)] == ["41.50", "50.25", "\u2014"]
    assert f"{paper.TRANSFER_TOP1['moco-clsp']['dtd']:.2f}" in table  # the paper's rows beside ours
    assert "Missing: transfer set aircraft for simclr-clsp: not found in /data" in page
