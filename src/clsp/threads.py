"""How many CPU threads torch's intra-op pool uses: chosen on purpose, once, and said.

torch's default is one thread per physical core of the machine, whatever the process may actually
run on (a cgroup, taskset or a job scheduler's allocation) and whatever else runs there. Its OpenMP
threads spin while they wait for each other, so on cores shared with another job a small step can run
20x slower with two threads than with one (issue 19: 1.24 s against 76 ms). The choice, in order:

  1. an explicit setting: `trainer.threads` (configs), or the CLSP_THREADS environment variable;
  2. OMP_NUM_THREADS, when the user set it;
  3. the number of CPUs this process may run on (os.sched_getaffinity).

It is printed once per process (to stderr, unless CLSP_QUIET is set), and again only if it changes, by the
commands where it matters (training, sampling, evaluation; not `data`, `report`, `positives` or --print-config).
"""

from __future__ import annotations

import os
import sys

ENV = "CLSP_THREADS"
_said: int | None = None


def available_cpus() -> int:
    """The CPUs this process may be scheduled on (its affinity mask), or os.cpu_count() where there is none."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def choose_threads(requested: int | None = None) -> tuple[int, str]:
    """(threads, why) from the setting, the environment and the affinity mask, in that order."""
    from clsp.errors import UserError

    for value, source in ((requested, "trainer.threads"), (os.environ.get(ENV), ENV),
                          (os.environ.get("OMP_NUM_THREADS"), "OMP_NUM_THREADS")):
        if value in (None, ""):
            continue
        try:
            threads = int(value)
        except ValueError:
            raise UserError(f"{source} must be a whole number of threads, got {value!r}") from None
        if threads < 1:
            raise UserError(f"{source} must be >= 1, got {threads}")
        return threads, source
    cpus = available_cpus()
    why = f"the {cpus} CPU{'s' if cpus > 1 else ''} this process may use"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if cpus > 1 and load > cpus:
        why += f"; the machine's load is {load:.1f}, so {ENV}=1 may well be faster"
    return cpus, why


def set_threads(requested: int | None = None, say: bool = True) -> int:
    """Set torch's intra-op threads as `choose_threads` says; say the choice the first time and on a change
    (`say=False`: set it without a word, for commands whose work threads do not speed up)."""
    global _said
    import torch

    threads, why = choose_threads(requested)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if say and threads != _said:
        if not os.environ.get("CLSP_QUIET"):
            print(f"clsp: {threads} CPU thread{'s' if threads > 1 else ''} ({why}; set {ENV} or trainer.threads "
                  f"to change)", file=sys.stderr)
        _said = threads
    return threads
