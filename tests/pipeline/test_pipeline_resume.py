"""A micro study (two seeds, a w sweep of two values) through the pipeline: killing it mid-stage and running it
again finishes the same work without redoing completed stages; once everything is complete, a re-run only
rewrites the report; the report shows each group's mean +- std over its seeds; the sweep trains one encoder per w."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clsp.layout import RunLayout

MICRO = Path(__file__).with_name("micro.yaml")


STUDY = ["seeds=[0,1]", "sweep={setting: w, values: [0.0, 1.0], methods: [simclr], seeds: [0]}"]
STAGES = 36   # diffusion, 3 syntheses, figures, 3 positives evaluations, 8 encoders, 20 evaluations


def pipeline_command(run: Path) -> list[str]:
    return [sys.executable, "-m", "clsp", "pipeline", "--config", str(MICRO), f"out_dir={run}", "trainer.checkpoint_every=1",
            *STUDY]


def child_env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", CLSP_QUIET="1", PYTHONUNBUFFERED="1")


def run_to_end(run: Path, log: Path) -> str:
    with open(log, "w") as out:
        result = subprocess.run(pipeline_command(run), stdout=out, stderr=subprocess.STDOUT, env=child_env(), timeout=900)
    text = log.read_text()
    assert result.returncode == 0, text[-3000:]
    return text


def stage_lines(log: str, state: str) -> list[str]:
    """Names of the stages the log reports in `state` ('skipped' or 'running')."""
    suffix = {"skipped": ": complete for the same inputs, skipped", "running": ": running"}[state]
    return re.findall(r"pipeline: \[\d+/\d+\] (\S+)" + re.escape(suffix), log)


@pytest.mark.slow
def test_sigkill_during_a_stage_then_rerun_resumes_and_a_third_run_only_reports(tmp_path):
    import html as html_module

    run = tmp_path / "run"
    at = RunLayout(run)
    first_log = tmp_path / "first.log"
    # Kill during the second seed of simclr, once it has written a checkpoint (everything before is complete).
    with open(first_log, "w") as out:
        proc = subprocess.Popen(pipeline_command(run), stdout=out, stderr=subprocess.STDOUT, env=child_env())
    checkpoint = at.pretrain("simclr-seed1") / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not checkpoint.is_file():
        assert proc.poll() is None, "the pipeline ended before it could be killed:\n" + first_log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint of pretrain/simclr-seed1 within 10 minutes"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not at.report.exists() and not (run / "done.json").exists()
    done_before = sorted(at.stages.iterdir())
    assert at.stage_record("pretrain/simclr-seed0") in done_before and at.stage_record("pretrain/simclr-seed1") not in done_before
    model_bytes = (at.model / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()

    second = run_to_end(run, tmp_path / "second.log")
    assert stage_lines(second, "skipped") == [
        "diffusion", "synthesis", "synthesis-w0", "synthesis-w1", "figures", "eval/positives", "eval/positives-w0",
        "eval/positives-w1", "pretrain/no-pretraining-seed0", "pretrain/no-pretraining-seed1", "pretrain/simclr-seed0"]
    assert stage_lines(second, "running")[0] == "pretrain/simclr-seed1"
    assert "pretrain: resuming from" in second  # the interrupted stage resumed from its checkpoint
    assert (at.model / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == model_bytes
    for name in ("simclr-seed0", "simclr-clsp-seed0"):
        for kind in ("knn", "linear", "embed", "hardness"):
            assert at.eval_metrics(name, kind).is_file(), (name, kind)
    # the sweep: one encoder per w, each trained on the store made with its w
    for w in ("0", "1"):
        record = (at.pretrain(f"simclr-clsp-w{w}-seed0") / "config.yaml").read_text()
        assert f"positives: {at.store(f'positives-w{w}')}" in record
        store = json.loads((at.store(f"positives-w{w}") / "manifest.json").read_text())
        assert store["generation"]["sampler"]["w"] == float(w)
        assert at.encoder(f"simclr-clsp-w{w}-seed0").is_file()
    assert at.report.is_file() and (run / "done.json").is_file()
    assert f"report: {at.report}" in second
    timings = json.loads(at.timings.read_text())["stages"]
    assert len(timings) == STAGES and all(t["seconds"] > 0 for t in timings.values())

    page = at.report.read_text()
    table = re.search(r'<table id="results">(.*?)</table>', page, re.S).group(1)
    rows = {name: [html_module.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)]
            for name, body in re.findall(r'<tr data-run="([^"]+)"[^>]*>(.*?)</tr>', table, re.S)}
    assert list(rows) == ["no-pretraining", "simclr", "simclr-clsp", "simclr-clsp-w0", "simclr-clsp-w1"]
    assert [rows[g][3] for g in rows] == ["2", "2", "2", "1", "1"]                  # seeds behind each row
    assert "\u00b1" in rows["simclr"][4] and "\u00b1" not in rows["simclr-clsp-w0"][4]  # a std needs two seeds

    report_before = at.report.stat().st_mtime_ns
    third = run_to_end(run, tmp_path / "third.log")
    assert stage_lines(third, "running") == []
    assert len(stage_lines(third, "skipped")) == STAGES
    assert "pipeline: report written" in third
    assert at.report.stat().st_mtime_ns > report_before

    # A deleted output is remade, whatever the stage record says; nothing else runs again.
    import shutil

    shutil.rmtree(at.evaluation("simclr-seed0", "knn"))
    fourth = run_to_end(run, tmp_path / "fourth.log")
    assert stage_lines(fourth, "running") == ["eval/simclr-seed0/knn"]
    assert at.eval_metrics("simclr-seed0", "knn").is_file()
