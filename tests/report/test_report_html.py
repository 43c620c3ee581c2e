"""The report on run directories in the documented layout: rows, differences, paper columns, missing
pieces, escaping, self-containment; and the `clsp report` command."""

from __future__ import annotations

import html
import re

import pytest

from clsp.errors import UserError
from clsp.layout import RunLayout
from clsp.report import paper
from clsp.report.html import build_report
from report_helpers import make_run_dir, write_encoder_stub, write_json


def results_rows(page: str) -> dict[str, list[str]]:
    """run name -> its results-table cells, as text."""
    table = re.search(r'<table id="results">(.*?)</table>', page, re.S).group(1)
    rows = {}
    for name, body in re.findall(r'<tr data-run="([^"]+)"[^>]*>(.*?)</tr>', table, re.S):
        rows[name] = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)]
    return rows


def test_results_table_has_a_row_per_variant_with_differences(tmp_path):
    run = make_run_dir(tmp_path, methods=("simclr", "moco"), variants=("base", "clsp", "aug"))
    page = build_report(run).read_text()
    rows = results_rows(page)
    assert list(rows) == ["simclr", "simclr-clsp", "simclr-aug", "moco", "moco-clsp", "moco-aug"]
    # columns: run, method, variant, seeds, knn best, knn200, linear, d knn, d knn200, d linear, probe
    assert rows["simclr"][3] == "1" and rows["simclr"][4] == "60.00" and rows["simclr"][6] == "70.00"
    assert rows["simclr-clsp"][7] == "+2.00 n = 1" and rows["simclr-clsp"][9] == "+1.50 n = 1"   # one seed: no noise estimate
    assert rows["simclr-clsp"][8] == "+2.00 n = 1"                                                 # at k = 200 too
    assert rows["moco-aug"][6] == "74.00" and rows["moco-aug"][9] == "+3.00 n = 1"
    assert rows["simclr"][7] == "\u2014"  # a baseline has no difference to itself
    assert "paper linear" not in page  # not a paper preset


def test_paper_preset_sets_the_papers_numbers_beside_the_run(tmp_path):
    run = make_run_dir(tmp_path, paper="cifar100")
    rows = results_rows(build_report(run).read_text())
    assert rows["moco-clsp"][11] == f"{paper.LINEAR_TOP1['cifar100']['moco-clsp']:.2f}"
    assert rows["simclr"][12] == f"{paper.RELEASE_LINEAR_TOP1['cifar100']['simclr']:.2f}"


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
    assert RunLayout(run).figure("curves_simclr").is_file()


def test_a_directory_that_is_not_a_run_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a pipeline run directory"):
        build_report(tmp_path)


def test_report_command_writes_and_prints_the_path(tmp_path, capsys):
    from clsp.cli import main

    run = make_run_dir(tmp_path, methods=("simclr",), variants=("base",))
    assert main(["report", str(run)]) == 0
    assert f"report: {RunLayout(run).report}" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_transfer_table_in_the_configs_order_with_missing_sets_stated(tmp_path):
    run = make_run_dir(tmp_path, methods=("simclr",), variants=("clsp",), paper="transfer",
                       config_extra={"eval": {"knn": True, "linear": True, "transfer": ["dtd", "pets", "aircraft"]}})
    rows = [{"dataset": "dtd", "status": "ok", "top1": 41.5}, {"dataset": "pets", "status": "ok", "top1": 50.25},
            {"dataset": "aircraft", "status": "missing", "reason": "not found in /data"}]
    write_json(RunLayout(run).eval_metrics("simclr-clsp", "transfer"), {"kind": "transfer", "results": {"sets": rows}})
    page = build_report(run).read_text()
    table = re.search(r'<table id="transfer">(.*?)</table>', page, re.S).group(1)
    assert re.findall(r"<th>([^<]+)</th>", table) == ["run", "dtd", "pets", "aircraft"]
    ours = re.search(r"<tr><td><code>simclr-clsp</code></td>(.*?)</tr>", table, re.S).group(1)
    assert [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", ours)] == ["41.50", "50.25", "\u2014"]
    assert f"{paper.TRANSFER_TOP1['moco-clsp']['dtd']:.2f}" in table  # the paper's rows beside ours
    assert "Missing: transfer set aircraft for simclr-clsp: not found in /data" in page


def test_seeds_give_mean_std_and_differences_beyond_two_standard_errors(tmp_path):
    """Three seeds per run (seed s adds s to every accuracy): mean +- std with the count, a difference that is
    large against its standard error is coloured, and a linear probe that diverged is 'failed', not a number."""
    run = make_run_dir(tmp_path, methods=("simclr",), variants=("base", "clsp", "aug"), seeds=(0, 1, 2))
    write_json(RunLayout(run).eval_metrics("simclr-aug-seed2", "linear"),
               {"kind": "linear", "results": {"top1": 11.0, "fit": {"status": "diverged", "reason": "training loss 1e4 > 2 log C"}}})
    page = build_report(run).read_text()
    rows = results_rows(page)
    assert list(rows) == ["simclr", "simclr-clsp", "simclr-aug"]
    assert rows["simclr"][3] == "3" and rows["simclr"][4] == "61.00 \u00b1 1.00"        # 60, 61, 62
    # clsp: +2 on every seed: difference 2.00, standard error sqrt(1/3 + 1/3) = 0.82 -> beyond 2 SE
    assert rows["simclr-clsp"][7] == "+2.00 \u00b1 0.82"
    assert re.search(r'<td class="num pos">\+2\.00', page)
    # aug: linear of seed 2 failed -> mean of seeds 0, 1: 73.0 + 0.5 = 73.50 +- 0.71, and the failure is named
    assert rows["simclr-aug"][6].startswith("73.50 \u00b1 0.71") and "(1 failed)" in rows["simclr-aug"][6]
    assert "simclr-aug-seed2</code> linear: diverged" in page
    assert "every seed" in page and "3 seeds per run" in page


def test_the_floor_and_a_sweep_have_their_rows_and_their_figure(tmp_path):
    run = make_run_dir(tmp_path, methods=("simclr",), variants=("base", "clsp"),
                       config_extra={"floor": True, "sweep": {"setting": "w", "values": [0.0, 1.0]},
                                     "synthesis": {"k": 2, "sampler": {"w": 0.1}}})
    at = RunLayout(run)
    for name, top1 in (("no-pretraining", 40.0), ("simclr-clsp-w0", 74.0), ("simclr-clsp-w1", 69.0)):
        for kind, results in (("knn", {"best": top1, "best_k": 5, "fixed": top1}), ("linear", {"top1": top1})):
            write_json(at.eval_metrics(name, kind), {"kind": kind, "results": results})
        write_encoder_stub(at, name)
    for store, agree in (("positives", 60.0), ("positives-w0", 70.0), ("positives-w1", 10.0)):
        write_json(at.store_metrics(store), {"kind": "positives", "results": {"store": {"agreement": agree}, "chance": 10.0,
                                                                               "ceiling": 90.0}})
    page = build_report(run).read_text()
    rows = results_rows(page)
    assert list(rows)[0] == "no-pretraining" and rows["no-pretraining"][2] == "no pretraining"
    assert rows["simclr-clsp-w0"][2] == "+ CLSP (w = 0)"
    sweep = re.search(r'<table class="small sweep">(.*?)</table>', page, re.S).group(1)
    cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", sweep)]
    assert cells[0::7] == ["0", "0.1", "1"]                              # the main run stands at w = 0.1
    assert cells[5::7] == ["70.00", "60.00", "10.00"]                     # each value's own store
    assert cells[6::7] == ["—"] * 3                                       # their hardness: not in these metrics
    assert at.figure("sweep_w").is_file()


def test_the_top_line_says_whether_training_beat_the_floor_and_collapsed_runs_get_no_difference(tmp_path):
    run = make_run_dir(tmp_path, methods=("simclr", "moco"), variants=("base", "clsp"), config_extra={"floor": True})
    at = RunLayout(run)
    write_json(at.eval_metrics("no-pretraining", "knn"), {"kind": "knn", "results": {"best": 61.5, "best_k": 5, "fixed": 59.0}})
    write_json(at.eval_metrics("no-pretraining", "linear"), {"kind": "linear", "results": {"top1": 71.0}})
    write_encoder_stub(at, "no-pretraining")
    write_json(at.pretrain_metrics("moco-clsp"), {"collapsed": True, "ssl_loss_final": 6.9, "ssl_loss_collapsed": 6.91})
    page = build_report(run).read_text()
    top = html.unescape(re.sub(r"<[^>]+>", "", re.search(r'<p class="verdict" id="verdict">(.*?)</p>', page, re.S).group(1)))
    assert page.index('id="verdict"') < page.index('class="sub"')          # the line under the title
    # knn best: simclr 60, simclr-clsp 62, moco 61, moco-clsp 63 against 61.5; linear 70, 71.5, 71, 72.5 against 71
    assert top.startswith("Not every trained encoder beats the untrained floor.")
    assert "kNN (best k) 61.50: 2 of 4 beat it (simclr-clsp, moco-clsp)" in top
    assert "linear 71.00: 2 of 4 beat it (simclr-clsp, moco-clsp)" in top
    rows = results_rows(page)
    assert rows["simclr"][4] == "60.00 below floor" and rows["simclr-clsp"][4] == "62.00"
    assert re.search(r'<tr data-run="simclr" class="below-floor">', page)
    assert rows["moco-clsp"][7:10] == ["\u2014 collapsed"] * 3                  # a collapsed run: no difference
    assert rows["simclr-clsp"][7] == "+2.00 n = 1"

    write_json(at.eval_metrics("no-pretraining", "knn"), {"kind": "knn", "results": {"best": 90.0, "best_k": 5, "fixed": 90.0}})
    write_json(at.eval_metrics("no-pretraining", "linear"), {"kind": "linear", "results": {"top1": 90.0}})
    page = build_report(run).read_text()
    assert "<b>No trained encoder beats the untrained floor.</b>" in page


def test_oracle_rows_are_labelled_and_quality_weights_shown(tmp_path):
    import json

    run = make_run_dir(tmp_path, methods=("simclr",), variants=("base", "oracle"))
    metrics = RunLayout(run).pretrain_metrics("simclr-oracle")
    quality = {"score_mean": 0.61, "weight_min": 0.0, "weight_q10": 0.42, "weight_median": 1.02, "weight_q90": 1.4,
               "weight_max": 1.62, "weight_zero": 0.03}
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "quality": quality}))
    page = build_report(run).read_text()
    assert results_rows(page)["simclr-oracle"][2] == "+ oracle (labels; upper bound)"
    assert "quality weights of the CLSP term" in page and "1.020" in page and "0.030" in page


def test_a_term_in_contrastive_form_is_named_in_its_row(tmp_path):
    import json

    run = make_run_dir(tmp_path, methods=("simclr",), variants=("base", "clsp", "oracle"))
    for name, form in (("simclr-clsp", "contrast"), ("simclr-oracle", "cosine")):
        metrics = RunLayout(run).pretrain_metrics(name)
        metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "clsp_form": form}))
    rows = results_rows(build_report(run).read_text())
    assert rows["simclr-clsp"][2] == "+ CLSP, contrastive term"
    assert rows["simclr-oracle"][2] == "+ oracle (labels; upper bound)"          # the paper's form: no word added
    assert rows["simclr"][2] == "baseline"
