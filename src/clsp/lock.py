"""One clsp process at a time in a run directory.

`with run_lock(RUN):` takes an advisory lock (flock) on RUN/.lock without waiting. A second process on
the same directory stops at once with a message naming the holder (pid, host, command, start time),
which the holder writes into the lock file. The kernel releases a flock when its holder dies, so a
process killed by SIGKILL leaves no lock behind, only its record: the next process takes over and says
so. A pid file could not tell a dead holder from a live one on another host, nor a reused pid.

The processes started for the other ranks run under their launcher's lock, recognised by role, not by
leftover variables: the holder names itself and the run in CLSP_RUN_LOCK, so a child whose parent holds
the lock on the same run (Lightning's DDP ranks) shares it; under torchrun (TORCHELASTIC_RUN_ID) the
worker of global rank 0 takes it; on a node of a multi-node run (MASTER_ADDR and NODE_RANK set) only
node 0 takes it. Any other process takes the lock whatever RANK or LOCAL_RANK say.
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
HOLDER_VARIABLE = "CLSP_RUN_LOCK"   # "PID:RUN" of the process holding RUN's lock, inherited by what it starts
log = logging.getLogger("clsp")
_held: set[Path] = set()          # run directories this process holds (a nested run_lock is a no-op)


def is_launcher(run_dir: str | os.PathLike | None = None) -> bool:
    """This process owns the run: not a rank that its launcher (holding the lock on `run_dir`), torchrun or
    another node's launcher runs beside the owner."""
    env = os.environ
    if run_dir is not None and env.get(HOLDER_VARIABLE) == f"{os.getppid()}:{Path(run_dir).resolve()}":
        return False                                  # started by the holder of this run's lock
    if env.get("TORCHELASTIC_RUN_ID"):
        return env.get("RANK", "0") == "0"            # a torchrun worker: the global rank 0 owns the run
    if env.get("MASTER_ADDR") and env.get("NODE_RANK", "0") != "0":
        return False                                  # another node of a multi-node run: node 0 owns it
    return True


def describe(holder: dict) -> str:
    if not holder:
        return "another clsp process"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, running `{holder.get('command')}` "
            f"since {holder.get('since')}")


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold RUN/.lock for the duration of the block, or raise UserError naming its holder."""
    run = Path(run_dir).resolve()
    if run in _held or not is_launcher(run):
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
    outer = os.environ.get(HOLDER_VARIABLE)
    os.environ[HOLDER_VARIABLE] = f"{os.getpid()}:{run}"
    try:
        yield
    finally:
        _held.discard(run)
        if outer is None:
            os.environ.pop(HOLDER_VARIABLE, None)
        else:
            os.environ[HOLDER_VARIABLE] = outer
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
