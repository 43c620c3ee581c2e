"""Will a training step fit in memory? A lower estimate, made before the first step.

A batch far larger than memory otherwise ends, minutes into a run, in an allocator traceback. The
estimate is the bytes of every leaf module's output (each storage once: an in-place ReLU adds nothing)
in one forward of two images, per image, times the images of a step: about what autograd keeps for the
backward pass, with the gradients, weights and optimiser state on top. A refusal means the step cannot
fit; a pass is no promise that it does.

Memory available: the device's free memory for CUDA; for the CPU, MemAvailable (/proc/meminfo) within
the cgroup's limit. CLSP_MEMORY_LIMIT_MB sets it instead (a machine shared with other jobs; tests).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from clsp.errors import UserError

LIMIT_VARIABLE = "CLSP_MEMORY_LIMIT_MB"


@torch.no_grad()
def activation_bytes_per_image(modules: list[nn.Module], forward: Callable[[torch.Tensor], object],
                               example: torch.Tensor) -> int:
    """Bytes of the outputs of every leaf module of `modules` when `forward(example)` runs, per image
    of `example`. Run in eval mode (BatchNorm's running statistics untouched), then the modes restored."""
    kept: dict[int, torch.Tensor] = {}   # by storage: an in-place ReLU's output is its input; kept alive meanwhile

    def count(_module, _inputs, output) -> None:
        for out in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(out, torch.Tensor):
                kept.setdefault(out.untyped_storage().data_ptr(), out)

    leaves = [m for module in modules for m in module.modules() if next(m.children(), None) is None]
    modes = [(m, m.training) for module in modules for m in module.modules()]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        for module in modules:
            module.eval()
        forward(example)
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes:
            m.train(training)
    return sum(t.untyped_storage().nbytes() for t in kept.values()) // len(example)


def available_bytes(device: str | torch.device) -> int | None:
    """Memory a step may use on `device`, or None when it cannot be told."""
    limit = os.environ.get(LIMIT_VARIABLE)
    if limit:
        return int(float(limit) * 2**20)
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0]) if torch.cuda.is_available() else None
    if device.type != "cpu":
        return None
    free = _meminfo_available()
    in_cgroup = _cgroup_room()
    known = [b for b in (free, in_cgroup) if b is not None]
    return min(known) if known else None


def check_step_fits(per_image: int, images_per_step: int, device: str | torch.device, key: str, value: int,
                    precision: str = "32") -> None:
    """UserError naming `key` when the step's activations alone exceed the memory available. The estimate is
    made in float32; under 16-bit autocast (`precision` "bf16-mixed", "16-mixed") half of it is counted."""
    need = per_image * images_per_step // (2 if str(precision).startswith(("bf16", "16")) else 1)
    room = available_bytes(device)
    if room is not None and need > room:
        fits = max(1, int(value * room / need))
        raise UserError(f"{key}={value} needs at least {need / 2**30:.1f} GiB for one step's activations on "
                        f"{torch.device(device).type}, more than the {room / 2**30:.1f} GiB available; lower {key} "
                        f"(at most about {fits})")


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
