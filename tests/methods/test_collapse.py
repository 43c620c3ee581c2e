"""A run whose projections collapsed is named as such: each method's closed-form "collapsed" loss is what its
own loss function gives for identical projections, and a run's metrics and the report say so."""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F
from methods_helpers import tiny_config

from clsp.methods.losses import infonce_queue, nnclr_loss, nt_xent
from clsp.methods.pretrain import collapse_check, pretrain


def test_the_closed_forms_are_the_losses_of_identical_projections():
    n, q = 12, 40
    same = F.normalize(torch.randn(1, 16), dim=1)
    z = same.expand(n, 16).clone()
    assert abs(nt_xent([z, z.clone()], 0.2).item() - math.log(2 * n - 1)) < 1e-5
    assert abs(infonce_queue(z, z, same.expand(q, 16).clone(), 0.2).item() - math.log(1 + q)) < 1e-5
    assert abs(nnclr_loss(z, z.clone(), 0.2).item() - math.log(n)) < 1e-5
    # and a learnt batch is far from them: distinct projections lower NT-Xent well below log(2N - 1)
    distinct = torch.eye(16)[:n]
    assert nt_xent([distinct, distinct.clone()], 0.2).item() < 0.5 * math.log(2 * n - 1)


def test_collapse_check_reads_the_end_of_the_loss_history(tmp_path):
    csv = tmp_path / "metrics.csv"
    rows = [5.9, 5.2, 4.1] + [3.0] * 17 + [5.985, 5.99]                 # learnt, then collapsed at the end
    csv.write_text("step,train/loss_ssl\n" + "".join(f"{i},{v}\n" for i, v in enumerate(rows)))
    assert collapse_check(csv, math.log(399))["collapsed"] is True
    csv.write_text("step,train/loss_ssl\n" + "".join(f"{i},{v}\n" for i, v in enumerate(rows[:-2])))
    assert collapse_check(csv, math.log(399))["collapsed"] is False
    assert collapse_check(csv, None)["collapsed"] is None                      # no closed form: no verdict
    assert collapse_check(tmp_path / "missing.csv", 1.0) == {"ssl_loss_final": None, "ssl_loss_collapsed": 1.0,
                                                            "collapsed": None}


def test_a_run_that_never_left_chance_is_named_and_the_report_says_so(tmp_path):
    """The tiny test network learns nothing contrastive in 6 steps: NT-Xent stays at log(2N - 1) (3.43 for a
    batch of 16; measured 3.40-3.70 over the run). metrics.json says so, and the report's results table too."""
    from clsp.layout import RunSpec
    from clsp.report.study import run_numbers

    out = pretrain(tiny_config(tmp_path / "run", "method=simclr", "dataset.subset=48", "epochs=2"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ssl_loss_collapsed"] == math.log(2 * metrics["global_batch"] - 1)
    assert metrics["collapsed"] is True and metrics["ssl_loss_final"] >= 0.98 * metrics["ssl_loss_collapsed"]
    numbers = run_numbers(RunSpec("simclr", "base"), None, None, metrics)
    assert "collapsed" in numbers.collapsed and f"{metrics['ssl_loss_collapsed']:.3f}" in numbers.collapsed
