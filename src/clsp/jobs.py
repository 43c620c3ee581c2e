"""A pipeline's independent stages side by side (`jobs: N`): a small scheduler of N worker processes.

A stage starts once every stage it reads (its `after`) is complete, in the first free worker. A worker
is a `clsp pipeline --config RUN/config.yaml --worker` process: it plans the same stages as the pipeline
and runs the ones it is sent, one at a time, as a `jobs: 1` pipeline runs all of them. So each has its own
thread pool and no GIL shared with the others: its share of the CPU threads (trainer.threads, else
CLSP_THREADS, OMP_NUM_THREADS or the CPUs, divided by N), and on a node with several GPUs its own group of
them; and it imports torch and Lightning once, not once per stage (about 5 CPU seconds each here). A
stage's messages go to RUN/stages/<stage>.log; the console says when each stage starts and ends.

The pipeline process keeps what must have one writer: the run lock (the children work under it: clsp.lock.run_lock
exports it to them), the stage records and timings.json, and the console. A failed stage stops new
starts; the running ones finish, so their work is kept, and the pipeline then names the failure and its
log. Ctrl-C or SIGTERM stops the children and exits 130: they leave no record, so a rerun resumes them.
A child dies with the pipeline even when that is killed outright, so a rerun never races an orphan.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import sys
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
    share, total, why = thread_share(trainer, jobs)
    groups = gpu_groups(trainer, jobs)
    shared = {"CLSP_THREADS": str(share), "OMP_NUM_THREADS": str(share), "MKL_NUM_THREADS": str(share),
              "PYTHONUNBUFFERED": "1"}   # and, from os.environ, the run lock this process holds (run_lock exports it)
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
class Worker:
    """A worker process and the stage it runs (None: idle)."""

    slot: int
    process: subprocess.Popen
    job: Optional[tuple[int, Any, str, Path]] = None   # (index in the plan, stage, fingerprint, log path)


def run_parallel(stages: Sequence[Any], records: Any, key_of: Callable[[Any], str], command: Sequence[str],
                 slot_envs: Sequence[dict[str, str]]) -> None:
    """Run `stages` (clsp.pipeline.Stage, in plan order) in len(slot_envs) workers (`command --worker`):
    each once its `after` stages are complete, skipping those whose record (`records`, a StageRecords)
    holds `key_of(stage)`. Ready stages start in plan order."""
    names = {stage.name for stage in stages}
    for stage in stages:
        missing = set(stage.after) - names
        if missing:
            raise RuntimeError(f"stage {stage.name} waits for stages that are not planned: {sorted(missing)}")
    total = len(stages)
    pending = list(enumerate(stages, 1))
    complete: set[str] = set()
    keys: dict[str, str] = {}
    workers: list[Optional[Worker]] = [None] * len(slot_envs)
    failed: list[str] = []
    replies = selectors.DefaultSelector()

    def idle() -> Optional[Worker]:
        for slot, worker in enumerate(workers):
            if worker is None:                   # started when first needed
                worker = workers[slot] = _start_worker(slot, command, slot_envs[slot], records.layout.stages)
                replies.register(worker.process.stdout, selectors.EVENT_READ, worker)
            if worker.job is None and worker.process.returncode is None:
                return worker
        return None

    def start_ready() -> None:
        """Skip every ready stage that is complete; send ready stages to idle workers."""
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
                worker = idle()
                if worker is None:
                    return
                pending.remove(item)
                log_path = records.layout.stage_record(stage.name, ".log")
                worker.job = (index, stage, key, log_path)
                with contextlib.suppress(BrokenPipeError):     # it died: its end of file says so below
                    worker.process.stdin.write(f"{stage.name}\t{log_path}\n".encode())
                    worker.process.stdin.flush()
                log.info(f"pipeline: [{index}/{total}] {stage.name}: running (log: {log_path})")

    def busy() -> list[Worker]:
        return [w for w in workers if w is not None and w.job is not None]

    with _sigterm_interrupts():
        try:
            while True:
                if not failed:
                    start_ready()
                if not busy():
                    break
                for ready, _ in replies.select():
                    worker = ready.data
                    reply = worker.process.stdout.readline().decode().split("\t")
                    job, worker.job = worker.job, None
                    if len(reply) != 4:            # the worker died (an idle one: its messages are in its log)
                        replies.unregister(worker.process.stdout)
                        died = _exit_text(worker.process.wait())
                        what = f"the worker running it died ({died})"
                        if job is None:
                            failed.append(f"a worker died ({died}, its messages in "
                                          f"{_worker_log(records.layout.stages, worker.slot)})")
                            log.error(f"pipeline: {failed[-1]}")
                            continue
                    else:
                        code, seconds, cpu = int(reply[1]), float(reply[2]), float(reply[3])
                        what = _exit_text(code)
                    index, stage, key, log_path = job
                    if len(reply) == 4 and code == 0:
                        records.complete(stage.name, key, seconds, cpu)
                        complete.add(stage.name)
                        log.info(f"pipeline: [{index}/{total}] {stage.name}: done in {seconds:.1f} s")
                        continue
                    failed.append(f"{stage.name} ({what}, its messages in {log_path})")
                    log.error(f"pipeline: [{index}/{total}] {stage.name}: failed ({what}); the end of "
                              f"{log_path}:\n{_tail(log_path)}")
                    if busy():
                        log.info(f"pipeline: no new stages; waiting for {', '.join(w.job[1].name for w in busy())} "
                                 "to finish (Ctrl-C stops them; a rerun resumes them)")
        except BaseException:
            _stop([w for w in workers if w is not None], [w.job[1].name for w in busy()])
            raise
        finally:
            replies.close()
    _close([w for w in workers if w is not None])
    if failed:
        raise UserError(f"failed: {'; '.join(failed)}; run the pipeline again to resume")
    if pending:
        raise RuntimeError(f"stages never ready (their `after` forms a cycle): {[stage.name for _, stage in pending]}")


def serve(stages: dict[str, Any]) -> None:
    """The worker's side: run each stage named on stdin ("NAME\tLOG"), its output into LOG, and reply
    "NAME\tCODE\tSECONDS\tCPU_SECONDS" on the original stdout. Ends when stdin closes."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)      # before fd 1 is each stage's log
    for line in sys.stdin:
        name, log_path = line.rstrip("\n").split("\t")
        started, cpu_started = time.perf_counter(), cpu_time()
        code = _run_logged(stages.get(name), name, Path(log_path))
        replies.write(f"{name}\t{code}\t{time.perf_counter() - started:.3f}\t{cpu_time() - cpu_started:.3f}\n")


def _run_logged(stage: Any, name: str, log_path: Path) -> int:
    """Run a stage with fds 1 and 2 in its log; its exit code as a `clsp` command's (Ctrl-C propagates)."""
    import traceback

    from clsp.errors import describe_os_error

    clsp_log = logging.getLogger("clsp")
    handlers = list(clsp_log.handlers)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log_path, "w", encoding="utf-8") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    try:
        if stage is None:
            raise UserError(f"this worker's plan has no stage {name} (was the run's config.yaml changed?)")
        stage.run()
        return 0
    except UserError as e:
        print(f"clsp: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"clsp: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - a bug: its traceback, in the stage's log
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for handler in set(clsp_log.handlers) - set(handlers):   # a failed stage's log.txt stays open otherwise
            clsp_log.removeHandler(handler)
            handler.close()


def cpu_time() -> float:
    """CPU seconds used so far by this process (all threads) and by its finished child processes: on a
    shared machine, what a stage cost independently of what else was running."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _worker_log(stages_dir: Path, slot: int) -> Path:
    return stages_dir / f"worker-{slot}.log"


def _start_worker(slot: int, command: Sequence[str], env: dict[str, str], stages_dir: Path) -> Worker:
    stages_dir.mkdir(parents=True, exist_ok=True)
    parent = os.getpid()
    die_with_parent = _parent_death_signal()

    def before_exec() -> None:   # in the child, between fork and exec: no imports, no locks
        if die_with_parent is not None:
            die_with_parent(1, signal.SIGKILL)           # PR_SET_PDEATHSIG
        if os.getppid() != parent:                       # the pipeline died before that took effect
            os._exit(1)

    with open(_worker_log(stages_dir, slot), "w", encoding="utf-8") as out:
        process = subprocess.Popen([*command, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=out,
                                   env=env, preexec_fn=before_exec)
    return Worker(slot, process)


def _close(workers: list[Worker]) -> None:
    """No more stages: the workers end when their stdin closes."""
    for worker in workers:
        with contextlib.suppress(OSError):
            worker.process.stdin.close()
    for worker in workers:
        try:
            worker.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


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


def _stop(workers: list[Worker], running: list[str]) -> None:
    """Terminate the workers (Ctrl-C reached them already when it came from a terminal), kill those still
    there after STOP_GRACE_S. The stages they were running have no record: a rerun resumes them."""
    live = [worker for worker in workers if worker.process.poll() is None]
    if not live:
        return
    try:                                                  # a second Ctrl-C must not leave children behind
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:                                    # not the main thread
        previous = {}
    try:
        if running:
            log.info(f"pipeline: stopping {', '.join(running)} (a rerun resumes them)")
        for worker in live:
            worker.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for worker in live:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
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
