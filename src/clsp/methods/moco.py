"""MoCo v2+ (Chen et al. 2020, symmetrised): queries from the online encoder, keys from a momentum copy.

    tau_s = 1 - (1 - tau_0) (cos(pi s / S) + 1) / 2            key momentum, 0.99 -> 0.999; applied before step s + 1
    L = 1/2 [InfoNCE(q1, k2, Q2) + InfoNCE(q2, k1, Q1)]        one negative queue per view
    Q_v <- enqueue(k_v over the global batch)                   clsp.methods.memory_bank, after the optimiser step

The CLSP term uses q1 and q3, both from the query (online) encoder; the base adds it.
Every view goes through each encoder on its own (the base's default), as in the release's MoCo
(q1, q2, q3 and the keys computed separately): BatchNorm statistics of the real views never mix
with the synthetic view's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from clsp.methods.base import MomentumMethod
from clsp.methods.losses import infonce_queue
from clsp.methods.memory_bank import random_bank


class MoCo(MomentumMethod):
    momentum_pairs = (("backbone", "key_backbone"), ("projector", "key_projector"))
    memory_bank, memory_size_key = "queue", "moco.queue_size"

    def __init__(self, cfg, *args, **kwargs) -> None:
        super().__init__(cfg, *args, **kwargs)
        self.register_buffer("queue", random_bank(2, cfg.moco.queue_size, cfg.projector.out_dim))

    def momentum_range(self) -> tuple[float, float]:
        return self.cfg.moco.momentum_start, self.cfg.moco.momentum_end

    def ssl_loss(self, views: list[Tensor], z: list[Tensor]) -> tuple[Tensor, dict, Tensor]:
        k1, k2 = self.target_projections(views[:2])
        q1, q2 = z[0], z[1]
        t = self.cfg.temperature
        loss = (infonce_queue(q1, k2, self.queue[1], t) + infonce_queue(q2, k1, self.queue[0], t)) / 2
        return loss, {}, torch.stack([k1, k2])

    def collapsed_ssl_loss(self, global_batch: int) -> float | None:
        """log(1 + Q): the positive among Q equal negatives, once the queue holds only this run's keys."""
        queue = self.cfg.moco.queue_size
        return math.log(1 + queue) if global_batch * self.total_steps >= queue else None
