"""Two pipelines on one run directory: the second stops at once with a message naming the first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MICRO = Path(__file__).with_name("micro.yaml")


def test_a_second_pipeline_on_the_same_directory_refuses_naming_the_running_one(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "clsp", "pipeline", "--config", str(MICRO), f"out_dir={run}",
               "diffusion.max_steps=100000"]                          # the first one runs long enough
    env = dict(os.environ, OMP_NUM_THREADS="1", CLSP_QUIET="1")
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 300
        while not (run / "log.txt").is_file():                        # it has started its work
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert second.returncode == 2, second.stderr[-2000:]
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"clsp: error: {run} is in use by pid {first.pid} on ")
    assert f"running `clsp pipeline --config {MICRO} out_dir={run} diffusion.max_steps=100000` since " in lines[0]
