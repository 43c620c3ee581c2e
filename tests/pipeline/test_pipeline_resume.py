"""Killing the pipeline mid-stage and running it again finishes the same work without redoing
completed stages; once everything is complete, a re-run only rewrites the report."""

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

MICRO = Path(__file__).with_name("micro.yaml")


def pipeline_command(run: Path) -> list[str]:
    return [sys.executable, "-m", "clsp", "pipeline", "--config", str(MICRO), f"out_dir={run}", "trainer.checkpoint_every=1"]


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
    run = tmp_path / "run"
    first_log = tmp_path / "first.log"
    # Kill during the second pretraining run, once it has written a checkpoint (everything before is complete).
    with open(first_log, "w") as out:
        proc = subprocess.Popen(pipeline_command(run), stdout=out, stderr=subprocess.STDOUT, env=child_env())
    checkpoint = run / "pretrain" / "simclr-clsp" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not checkpoint.is_file():
        assert proc.poll() is None, "the pipeline ended before it could be killed:\n" + first_log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint of pretrain/simclr-clsp within 10 minutes"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "report.html").exists() and not (run / "done.json").exists()
    done_before = sorted(p.name for p in (run / "stages").iterdir())
    assert "pretrain__simclr.json" in done_before and "pretrain__simclr-clsp.json" not in done_before
    model_bytes = (run / "diffusion" / "model" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()

    second = run_to_end(run, tmp_path / "second.log")
    assert stage_lines(second, "skipped") == ["diffusion", "synthesis", "figures", "pretrain/simclr"]
    assert stage_lines(second, "running")[0] == "pretrain/simclr-clsp"
    assert "pretrain: resuming from" in second  # the interrupted stage resumed from its checkpoint
    assert (run / "diffusion" / "model" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == model_bytes
    for name in ("simclr", "simclr-clsp"):
        assert (run / "pretrain" / name / "encoder.safetensors").is_file()
        for kind in ("knn", "linear", "embed", "hardness"):
            assert (run / "eval" / name / kind / "metrics.json").is_file(), (name, kind)
    assert (run / "report.html").is_file() and (run / "done.json").is_file()
    assert f"report: {run / 'report.html'}" in second
    timings = json.loads((run / "timings.json").read_text())["stages"]
    assert len(timings) == 13 and all(t["seconds"] > 0 for t in timings.values())

    report_before = (run / "report.html").stat().st_mtime_ns
    third = run_to_end(run, tmp_path / "third.log")
    assert stage_lines(third, "running") == []
    assert len(stage_lines(third, "skipped")) == 13
    assert "pipeline: report written" in third
    assert (run / "report.html").stat().st_mtime_ns > report_before
