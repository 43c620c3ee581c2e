"""A pipeline's independent stages side by side (`jobs: N`): a small scheduler of child `clsp` processes.

A stage starts once every stage it reads (its `after`) is complete. It runs as a process of its own,
`clsp pipeline --config RUN/config.yaml --stage NAME`, so it has its own thread pool and no GIL shared
with the others: its share of the CPU threads (trainer.threads, else CLSP_THREADS, OMP_NUM_THREADS or the
CPUs, divided by N), and on a node with several GPUs its own group of them. Its messages go to
RUN/stages/<stage>.log; the console says when each stage starts and ends.

The pipeline process keeps what must have one writer: the run lock (the children work under it, see
clsp.lock.held_by_parent), the stage records and timings.json, and the console. A failed stage stops new
starts; the running ones finish, so their work is kept, and the pipeline then names the failure and its
log. Ctrl-C or SIGTERM stops the children and exits 130: they leave no record, so a rerun resumes them.
A child dies with the pipeline even when that is killed outright, so a rerun never races an orphan.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from clsp.errors import UserError

log = logging.getLogger("clsp.pipeline")
STOP_GRACE_S = 10.0          # how long stopped children may take to exit before they are killed
FAILURE_TAIL = 15            # lines of a failed stage's log shown on the console


def job_environments(run: Path, trainer: Any, jobs: int) -> list[dict[str, str]]:
    """The environment of each of the `jobs` slots: its share of the CPU threads, its GPUs (when several
    are visible) and the run lock held by this process. Refuses a device setting a slot cannot honour."""
    from clsp.lock import held_for_children

    share, total, why = thread_share(trainer, jobs)
    groups = gpu_groups(trainer, jobs)
    shared = {"CLSP_THREADS": str(share), "OMP_NUM_THREADS": str(share), "MKL_NUM_THREADS": str(share),
              "PYTHONUNBUFFERED": "1", **held_for_children(run)}
    where = f"; GPUs {' | '.join(groups)}" if groups[0] is not None else ""
    log.info(f"pipeline: {jobs} stages at a time, {share} CPU thread{'s' if share > 1 else ''} each (of {total}: {why})"
             f"{where}; each stage's messages in {run / 'stages'}/<stage>.log")
    return [dict(os.environ, **shared, **({"CUDA_VISIBLE_DEVICES": g} if g is not None else {})) for g in groups]


def thread_share(trainer: Any, jobs: int) -> tuple[int, int, str]:
    """(threads of each slot, threads in all, why that many): the choice of clsp.threads, split evenly."""
    from clsp.threads import choose_threads

    total, why = choose_threads(trainer.threads)
    return max(1, total // jobs), total, why


def gpu_groups(trainer: Any, jobs: int) -> list[Optional[str]]:
    """CUDA_VISIBLE_DEVICES of each slot: the visible GPUs dealt out in equal groups (n // jobs each; one
    GPU per slot, shared round-robin, when there are more slots than GPUs). None: on the CPU or one GPU,
    the environment is left alone. `trainer.devices: auto` then means the slot's group."""
    from clsp.training import devices, uses_gpu

    if not uses_gpu(trainer):
        return [None] * jobs
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [d.strip() for d in visible.split(",") if d.strip()]
    else:
        import torch

        ids = [str(i) for i in range(torch.cuda.device_count())]
    if len(ids) < 2:
        return [None] * jobs
    size = max(1, len(ids) // jobs)
    wanted = devices(trainer)
    if wanted != "auto" and (isinstance(wanted, list) or wanted > size):
        raise UserError(f"jobs={jobs} gives each stage {size} of the {len(ids)} visible GPUs, but trainer.devices is "
                        f"{trainer.devices}; set trainer.devices=auto (each stage uses its GPUs) or fewer jobs")
    if jobs >= len(ids):
        return [ids[i % len(ids)] for i in range(jobs)]
    return [",".join(ids[i * size:(i + 1) * size]) for i in range(jobs)]


@dataclass
class Job:
    """A stage running in a child process."""

    index: int                   # the stage's place in the plan: [index/total] in messages
    stage: Any                   # clsp.pipeline.Stage
    key: str                     # the fingerprint its record will hold
    slot: int
    process: subprocess.Popen
    log_path: Path
    started: float


def run_parallel(stages: Sequence[Any], records: Any, key_of: Callable[[Any], str], command: Sequence[str],
                 slot_envs: Sequence[dict[str, str]]) -> None:
    """Run `stages` (clsp.pipeline.Stage, in plan order) len(slot_envs) at a time: each as `command
    --stage NAME` once its `after` stages are complete, skipping those whose record (`records`, a
    StageRecords) holds `key_of(stage)`. Ready stages start in plan order."""
    names = {stage.name for stage in stages}
    for stage in stages:
        missing = set(stage.after) - names
        if missing:
            raise RuntimeError(f"stage {stage.name} waits for stages that are not planned: {sorted(missing)}")
    total = len(stages)
    pending = list(enumerate(stages, 1))
    complete: set[str] = set()
    keys: dict[str, str] = {}
    running: dict[int, Job] = {}
    free = list(range(len(slot_envs)))
    failed: list[tuple[Job, int]] = []

    def start_ready() -> None:
        """Skip every ready stage that is complete; start ready stages while a slot is free."""
        scan = True
        while scan:
            scan = False
            for item in list(pending):
                index, stage = item
                if not complete.issuperset(stage.after):
                    continue
                key = keys.setdefault(stage.name, key_of(stage))  # its inputs are final now
                if records.is_complete(stage.name, key, stage.output):
                    log.info(f"pipeline: [{index}/{total}] {stage.name}: complete for the same inputs, skipped")
                    pending.remove(item)
                    complete.add(stage.name)
                    scan = True                    # stages after it may be ready now, earlier ones first
                    break
                if free:
                    pending.remove(item)
                    job = _start(index, stage, key, free.pop(0), records.layout.stage_record(stage.name, ".log"),
                                 command, slot_envs)
                    running[job.process.pid] = job
                    log.info(f"pipeline: [{index}/{total}] {stage.name}: running (log: {job.log_path})")

    with _sigterm_interrupts():
        try:
            while True:
                if not failed:
                    start_ready()
                if not running:
                    break
                pid, status, usage = os.wait4(-1, 0)
                job = running.pop(pid, None)
                if job is None:
                    continue                       # not a stage (nothing else is started meanwhile)
                code = os.waitstatus_to_exitcode(status)
                job.process.returncode = code      # reaped here: Popen must not wait for it again
                free.append(job.slot)
                free.sort()
                seconds = time.perf_counter() - job.started
                name = job.stage.name
                if code == 0:
                    records.complete(name, job.key, seconds, usage.ru_utime + usage.ru_stime)
                    complete.add(name)
                    log.info(f"pipeline: [{job.index}/{total}] {name}: done in {seconds:.1f} s")
                    continue
                failed.append((job, code))
                log.error(f"pipeline: [{job.index}/{total}] {name}: failed ({_exit_text(code)}); the end of "
                          f"{job.log_path}:\n{_tail(job.log_path)}")
                if running:
                    log.info(f"pipeline: no new stages; waiting for {', '.join(j.stage.name for j in running.values())} "
                             "to finish (Ctrl-C stops them; a rerun resumes them)")
        except BaseException:
            _stop(list(running.values()))
            raise
    if failed:
        what = "; ".join(f"{job.stage.name} ({_exit_text(code)}, its messages in {job.log_path})" for job, code in failed)
        raise UserError(f"stage{'s' if len(failed) > 1 else ''} failed: {what}; run the pipeline again to resume")
    if pending:
        raise RuntimeError(f"stages never ready (their `after` forms a cycle): {[stage.name for _, stage in pending]}")


def _start(index: int, stage: Any, key: str, slot: int, log_path: Path, command: Sequence[str],
           slot_envs: Sequence[dict[str, str]]) -> Job:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    parent = os.getpid()
    die_with_parent = _parent_death_signal()

    def before_exec() -> None:   # in the child, between fork and exec: no imports, no locks
        if die_with_parent is not None:
            die_with_parent(1, signal.SIGKILL)           # PR_SET_PDEATHSIG
        if os.getppid() != parent:                       # the pipeline died before that took effect
            os._exit(1)

    with open(log_path, "w", encoding="utf-8") as out:
        process = subprocess.Popen([*command, "--stage", stage.name], stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, env=slot_envs[slot], preexec_fn=before_exec)
    return Job(index, stage, key, slot, process, log_path, time.perf_counter())


def _parent_death_signal() -> Optional[Callable[[int, int], int]]:
    """prctl from the C library (Linux), resolved before any fork: the kernel then kills a child whose
    parent dies, even by SIGKILL. None elsewhere (a killed pipeline's children then finish their stage)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM acts like Ctrl-C while the children run (the default would leave them running unlocked)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:                                    # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(jobs: list[Job]) -> None:
    """Terminate running children (Ctrl-C reached them already when it came from a terminal), kill those
    still there after STOP_GRACE_S. Their stages have no record: a rerun resumes them."""
    live = [job for job in jobs if job.process.poll() is None]
    if not live:
        return
    try:                                                  # a second Ctrl-C must not leave children behind
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:                                    # not the main thread
        previous = {}
    try:
        log.info(f"pipeline: stopping {', '.join(job.stage.name for job in live)} (a rerun resumes them)")
        for job in live:
            job.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for job in live:
            try:
                job.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                job.process.kill()
                job.process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_text(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[-FAILURE_TAIL:]
    except OSError as e:
        return f"    (unreadable: {e.strerror})"
    return "\n".join(f"    {line}" for line in lines) or "    (empty)"
