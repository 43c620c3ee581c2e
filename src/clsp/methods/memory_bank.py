"""The memory bank of past projections that MoCo (its negative queues), NNCLR and All4One (their support
sets) read: a FIFO ring buffer written once per step, after the optimiser step.

    B[(s n + i) mod S] <- e_i        i < n: the step's entries gathered over ranks, s the step, S the size

The write position follows from the step (the size is a multiple of the global batch n: `validate`
checks it), so no pointer is saved; the bank itself is a module buffer, so it is in checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from clsp.methods.losses import gather


def random_bank(*shape: int) -> Tensor:
    """A bank (..., S, d) of random unit vectors, the entries a run starts from."""
    return F.normalize(torch.randn(*shape), dim=-1)


@torch.no_grad()
def enqueue(bank: Tensor, entries: Tensor, step: int) -> None:
    """Write this step's entries (..., n, d), gathered over ranks along n, over the bank's (..., S, d)
    oldest rows, in place (after the optimiser step: the loss read the bank as it was)."""
    entries = gather(entries.movedim(-2, 0)).movedim(0, -2)
    n = entries.shape[-2]
    start = (step * n) % bank.shape[-2]
    bank[..., start:start + n, :] = entries.to(bank.dtype)
