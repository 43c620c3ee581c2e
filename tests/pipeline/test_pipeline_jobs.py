"""`jobs: N`: independent stages side by side. The plan says what each stage waits for; a jobs=2 run, stopped
with SIGTERM mid-stage and run again, ends with the same records and the same metrics as a jobs=1 run; a failed
stage stops new starts and is named with its log."""

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

from clsp.errors import ConfigError
from clsp.layout import RunLayout

MICRO = Path(__file__).with_name("micro.yaml")
# Two encoders that need no positives (base, aug) and their kNN evaluations: 4 stages, 2 of them at a time.
SMALL = ["variants=[base,aug]", "floor=false", "eval.embed=false", "eval.hardness=false", "eval.positives=false",
         "eval.linear=false", "pretrain.epochs=3", "trainer.checkpoint_every=1"]


def test_jobs_must_be_at_least_one(micro_config):
    with pytest.raises(ConfigError, match="jobs"):
        micro_config("jobs=0")
    assert micro_config("jobs=2").jobs == 2


def test_each_stage_waits_for_the_stages_it_reads(micro_config):
    from clsp.pipeline import Pipeline

    cfg = micro_config("variants=[base,clsp,aug]", "sweep={setting: w, values: [1.0]}")
    after = {stage.name: stage.after for stage in Pipeline(cfg).stages()}
    assert after["diffusion"] == ()
    assert after["synthesis"] == after["synthesis-w1"] == ("diffusion",)
    assert after["figures"] == ("synthesis",)
    assert after["eval/positives-w1"] == ("synthesis-w1",)
    assert after["pretrain/no-pretraining"] == after["pretrain/simclr"] == after["pretrain/simclr-aug"] == ()
    assert after["pretrain/simclr-clsp"] == ("synthesis",)
    assert after["pretrain/simclr-clsp-w1"] == ("synthesis-w1",)
    assert after["eval/simclr-aug/knn"] == ("pretrain/simclr-aug",)
    assert set(after["eval/simclr/hardness"]) == {"pretrain/simclr", "synthesis"}
    assert all(set(waits) <= set(after) for waits in after.values())
    with_model = Pipeline(micro_config(f"model_dir={tmp_model(cfg)}")).stages()
    assert [s.after for s in with_model if s.name == "synthesis"] == [()]   # no diffusion stage to wait for


def test_each_job_gets_its_share_of_the_gpus(monkeypatch):
    from clsp.errors import UserError
    from clsp.jobs import gpu_groups
    from clsp.training import TrainerConfig

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    gpu = TrainerConfig(accelerator="gpu", devices="auto")
    assert gpu_groups(gpu, 2) == ["4,5", "6,7"]
    assert gpu_groups(TrainerConfig(accelerator="gpu"), 4) == ["4", "5", "6", "7"]     # devices: 1, one GPU a job
    assert gpu_groups(gpu, 6) == ["4", "5", "6", "7", "4", "5"]                      # more jobs than GPUs: shared
    assert gpu_groups(TrainerConfig(accelerator="cpu"), 2) == [None, None]
    with pytest.raises(UserError, match="trainer.devices=auto"):
        gpu_groups(TrainerConfig(accelerator="gpu", devices="4"), 2)                # a job has 2 of them
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert gpu_groups(gpu, 2) == [None, None]                                        # one GPU: shared as it is


def test_workers_work_under_the_pipelines_lock_and_nobody_else_does(tmp_path):
    from clsp.lock import HOLDER_VARIABLE, run_lock

    enter = ("import sys\nfrom clsp.errors import UserError\nfrom clsp.lock import run_lock\ntry:\n"
             "    with run_lock(sys.argv[1]):\n        print('in')\nexcept UserError:\n    print('refused')")

    def child(extra: dict[str, str]) -> str:
        env = {k: v for k, v in os.environ.items() if k != HOLDER_VARIABLE}
        return subprocess.run([sys.executable, "-c", enter, str(tmp_path)], env={**env, **extra}, capture_output=True,
                              text=True, timeout=120).stdout.strip()

    with run_lock(tmp_path):
        held = {HOLDER_VARIABLE: os.environ[HOLDER_VARIABLE]}              # what run_lock exports to the jobs workers
        assert child(held) == "in"                                          # started by the holder
        assert child({}) == "refused"
        assert child({HOLDER_VARIABLE: f"1:{tmp_path.resolve()}"}) == "refused"   # a process that is not its parent
        assert child({HOLDER_VARIABLE: f"{os.getpid()}:{(tmp_path / 'other').resolve()}"}) == "refused"  # another run
    assert HOLDER_VARIABLE not in os.environ                                # and withdraws once released


def tmp_model(cfg) -> Path:
    """A directory to name as model_dir (planning only checks that it exists)."""
    path = Path(cfg.out_dir).parent / "model"
    path.mkdir(parents=True, exist_ok=True)
    return path


def command(run: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "clsp", "pipeline", "--config", str(MICRO), f"out_dir={run}", *SMALL, *overrides]


def child_env(threads: int = 2) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", CLSP_THREADS=str(threads), CLSP_QUIET="1", PYTHONUNBUFFERED="1")


def run_to_end(run: Path, log: Path, *overrides: str, threads: int = 2) -> str:
    with open(log, "w") as out:
        result = subprocess.run(command(run, *overrides), stdout=out, stderr=subprocess.STDOUT, env=child_env(threads),
                                timeout=900)
    text = log.read_text()
    assert result.returncode == 0, text[-3000:]
    return text


def workers_of(run: Path) -> list[int]:
    """Live worker processes of the pipeline in `run`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--worker" in argv and str(RunLayout(run).config).encode() in argv:
            found.append(int(proc.name))
    return found


def results(run: Path) -> dict[str, object]:
    """Every stage record's name and every metrics.json, without times, dates and the run's own path."""
    out: dict[str, object] = {"records": sorted(p.name for p in RunLayout(run).stages.glob("*.json"))}
    for path in sorted(run.glob("*/**/metrics.json")):
        metrics = json.loads(path.read_text().replace(str(run), "RUN"))
        out[str(path.relative_to(run))] = strip_times(metrics)
    return out


def strip_times(value):
    if isinstance(value, dict):
        return {k: strip_times(v) for k, v in value.items()
                if not re.search(r"seconds|_at$|per_second|elapsed", k)}
    if isinstance(value, list):
        return [strip_times(v) for v in value]
    return value


@pytest.mark.slow
def test_two_jobs_stopped_and_rerun_match_one_job(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    # one job with one thread: what each of the two jobs below gets (a stage's float sums depend on its thread count)
    sequential = run_to_end(one, tmp_path / "one.log", threads=1)
    assert "stages at a time" not in sequential

    # jobs=2, stopped with SIGTERM once pretrain/simclr has a checkpoint (pretrain/simclr-aug runs beside it)
    at = RunLayout(two)
    first_log = tmp_path / "first.log"
    with open(first_log, "w") as out:
        proc = subprocess.Popen(command(two, "jobs=2"), stdout=out, stderr=subprocess.STDOUT, env=child_env())
    checkpoint = at.pretrain("simclr") / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not checkpoint.is_file():
        assert proc.poll() is None, "the pipeline ended before it could be stopped:\n" + first_log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint of pretrain/simclr within 10 minutes"
        time.sleep(0.2)
    assert len(workers_of(two)) == 2
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130, first_log.read_text()[-3000:]
    assert workers_of(two) == []                                   # no worker outlives the pipeline
    first = first_log.read_text()
    assert "1 CPU thread each (of 2: CLSP_THREADS)" in first           # each job its share of the threads
    assert "pipeline: stopping " in first and "pretrain/simclr" in first.split("pipeline: stopping ")[1]
    assert not at.stage_record("pretrain/simclr").exists() and not at.report.exists()

    second = run_to_end(two, tmp_path / "second.log", "jobs=2")
    assert "pretrain: resuming from" in at.stage_record("pretrain/simclr", ".log").read_text()
    assert re.findall(r"\[\d+/4\] (\S+): done", second).count("pretrain/simclr") == 1
    assert results(two) == results(one)
    timings = json.loads(at.timings.read_text())["stages"]
    assert len(timings) == 4 and all(t["seconds"] > 0 and t["cpu_seconds"] > 0 for t in timings.values())
    assert at.report.is_file() and (two / "done.json").is_file()


def test_a_failed_stage_stops_new_starts_and_is_named_with_its_log(tmp_path):
    run, model = tmp_path / "run", tmp_path / "not-a-model"
    model.mkdir()
    result = subprocess.run(command(run, "jobs=2", f"model_dir={model}", "variants=[base]", "eval.hardness=true"),
                            capture_output=True, text=True, env=child_env(), timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    at = RunLayout(run)
    log_path = at.stage_record("synthesis", ".log")
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"clsp: error: failed: synthesis (exit code 2, its messages in {log_path})")
    assert "clsp: error:" in log_path.read_text()                  # the stage's own message, in its log
    assert f"synthesis: failed (exit code 2); the end of {log_path}" in result.stderr
    assert not at.stage_record("synthesis").exists()
    assert not at.stage_record("figures", ".log").exists()          # waited for synthesis: never started
    assert not at.report.exists()
