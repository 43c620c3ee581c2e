"""Run locks: a second process on a run directory stops at once naming the first; a lock left by a
killed process is taken over; ranks that a launcher started share its lock."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from clsp.errors import UserError
from clsp.lock import LOCK_FILE, run_lock

HOLD = """
import sys, time
from clsp.lock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def hold_in_another_process(run):
    script = run.parent / "hold_the_lock.py"
    script.write_text(HOLD)
    process = subprocess.Popen([sys.executable, str(script), str(run)], stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_process_is_refused_naming_the_first_then_a_killed_holder_is_taken_over(tmp_path, caplog):
    run = tmp_path / "run"
    holder = hold_in_another_process(run)
    try:
        started = time.monotonic()
        with pytest.raises(UserError) as refused:
            with run_lock(run):
                pass
        assert time.monotonic() - started < 1.0                      # at once, no waiting
        message = str(refused.value)
        assert f"pid {holder.pid} on " in message and f"hold_the_lock.py {run}`" in message and " since " in message
        assert f"kill {holder.pid}" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid   # the dead holder's record stays
    with caplog.at_level(logging.WARNING, logger="clsp"):
        with run_lock(run):
            assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"left by pid {holder.pid}" in caplog.text and "taking it over" in caplog.text
    assert (run / LOCK_FILE).read_text() == ""                          # released in good order: no record


TRY = """
import sys
from clsp.errors import UserError
from clsp.lock import run_lock
try:
    with run_lock(sys.argv[1]):
        print("ran")
except UserError as e:
    print("refused")
"""


def try_in_a_child(run, **env) -> str:
    """What a child process started now (inheriting this one's environment, plus `env`) gets: ran or refused."""
    script = run.parent / "try_the_lock.py"
    script.write_text(TRY)
    return subprocess.run([sys.executable, str(script), str(run)], capture_output=True, text=True, check=True,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **env)).stdout.strip()


def test_nested_locks_in_one_process_and_ranks_started_by_a_launcher_do_not_block(tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    with run_lock(run):
        with run_lock(run):                                            # e.g. a stage function inside the pipeline
            pass
        assert try_in_a_child(run, LOCAL_RANK="1") == "ran"            # a DDP rank the holder started shares its lock
        with run_lock(other):                                          # a second run held by the same process
            assert try_in_a_child(other) == "ran" and try_in_a_child(run) == "refused"
        alone = {"CLSP_RUN_LOCK": ""}                                   # not started by the holder
        assert try_in_a_child(run, **alone) == "refused"
        assert try_in_a_child(run, TORCHELASTIC_RUN_ID="job", RANK="1", **alone) == "ran"   # a torchrun worker
        assert try_in_a_child(run, TORCHELASTIC_RUN_ID="job", RANK="0", **alone) == "refused"
        assert try_in_a_child(run, MASTER_ADDR="node0", NODE_RANK="1", **alone) == "ran"    # another node
    assert "CLSP_RUN_LOCK" not in os.environ                           # released: what it starts later is on its own


def test_leftover_rank_variables_do_not_skip_the_lock(tmp_path):
    """A shell that still exports RANK or LOCAL_RANK is not a rank: the lock holds against it."""
    run = tmp_path / "run"
    holder = hold_in_another_process(run)
    try:
        for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
            assert try_in_a_child(run, **{name: "1"}) == "refused", name
    finally:
        holder.kill()
        holder.wait()
