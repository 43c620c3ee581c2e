"""One clsp process at a time in a run directory.

`with run_lock(RUN):` takes an advisory lock (flock) on RUN/.lock without waiting. A second process on
the same directory stops at once with a message naming the holder (pid, host, command, start time),
which the holder writes into the lock file. The kernel releases a flock when its holder dies, so a
process killed by SIGKILL leaves no lock behind, only its record: the next process takes over and says
so. A pid file could not tell a dead holder from a live one on another host, nor a reused pid.

The processes Lightning or torchrun start for the other ranks run under their launcher's lock: only a
process that is rank 0 everywhere (RANK, LOCAL_RANK, NODE_RANK, GROUP_RANK unset or 0) takes it. Likewise
the stages a pipeline runs side by side (`jobs: N`) run under the pipeline's lock: it names the run directory
and itself in HELD_ENV, which a child trusts only while that process is still its parent.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Iterator

from clsp.errors import UserError

LOCK_FILE = ".lock"
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")
HELD_ENV = "CLSP_RUN_LOCK_HELD"   # "RUN_DIR:PID": process PID holds RUN_DIR's lock for the children it starts
log = logging.getLogger("clsp")
_held: set[Path] = set()          # run directories this process holds (a nested run_lock is a no-op)


def is_launcher() -> bool:
    """This process is rank 0 on node 0: not a rank that Lightning or torchrun started beside it."""
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)


def held_for_children(run_dir: str | os.PathLike) -> dict[str, str]:
    """The environment a lock holder gives the processes it starts to work in its run directory."""
    return {HELD_ENV: f"{Path(run_dir).resolve()}:{os.getpid()}"}


def held_by_parent(run: Path) -> bool:
    """This process's parent holds `run`'s lock for it (see held_for_children). An orphan whose parent
    died is not covered any more: it takes the lock itself, or stops if a new pipeline holds it."""
    path, _, pid = os.environ.get(HELD_ENV, "").rpartition(":")
    return bool(path) and Path(path) == run and pid == str(os.getppid())


def describe(holder: dict) -> str:
    if not holder:
        return "another clsp process"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, running `{holder.get('command')}` "
            f"since {holder.get('since')}")


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold RUN/.lock for the duration of the block, or raise UserError naming its holder."""
    run = Path(run_dir).resolve()
    if run in _held or not is_launcher() or held_by_parent(run):
        yield
        return
    created = not run.exists()
    run.mkdir(parents=True, exist_ok=True)
    fd = os.open(run / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _read(fd)
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise UserError(f"{run} is in use by {describe(holder)}; wait for it to end or stop it "
                            f"(kill {holder.get('pid', 'PID')}), or choose another output directory") from None
        log.warning(f"run lock: {run} cannot be locked ({e.strerror}); make sure no other clsp process uses it")
        yield
        return
    previous = _read(fd)
    if previous:
        log.warning(f"run lock: {run} was left by {describe(previous)}, which ended without releasing it "
                    "(killed?); taking it over")
    _write(fd, {"pid": os.getpid(), "host": platform.node(), "command": _command_line(),
                "since": _dt.datetime.now().astimezone().isoformat(timespec="seconds")})
    _held.add(run)
    try:
        yield
    finally:
        _held.discard(run)
        try:
            os.ftruncate(fd, 0)       # an empty record: released in good order
            if created and [p.name for p in run.iterdir()] == [LOCK_FILE]:
                (run / LOCK_FILE).unlink()   # a command that stopped before writing anything leaves no folder
                run.rmdir()
        except OSError:
            pass
        os.close(fd)                  # releases the flock


def _command_line() -> str:
    program = "clsp" if Path(sys.argv[0]).name in ("clsp", "__main__.py") else sys.argv[0]
    return " ".join([program, *sys.argv[1:]])


def _read(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 1 << 16)
        holder = json.loads(data.decode("utf-8")) if data.strip() else {}
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(fd: int, holder: dict) -> None:
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))
    except OSError:
        pass                          # the record is for messages only; the flock is the lock
