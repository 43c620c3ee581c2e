"""MoCo v2+ (Chen et al. 2020, symmetrised): queries from the online encoder, keys from a momentum copy.

    tau_s = 1 - (1 - tau_0) (cos(pi s / S) + 1) / 2            key momentum, 0.99 -> 0.999 over S steps
    L = 1/2 [InfoNCE(q1, k2, Q2) + InfoNCE(q2, k1, Q1)]        one negative queue per view
    Q_v <- enqueue(k_v over the global batch)                   FIFO, after the optimiser step; buffers, so in checkpoints

The CLSP term uses q1 and q3, both from the query (online) encoder; the base adds it.
Every view goes through each encoder on its own (the base's default), as in the release's MoCo
(q1, q2, q3 and the keys computed separately): BatchNorm statistics of the real views never mix
with the synthetic view's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from clsp.methods.base import ContrastiveMethod, frozen_copy, momentum_at, momentum_projections, momentum_update
from clsp.methods.losses import gather, infonce_queue


class MoCo(ContrastiveMethod):
    def __init__(self, cfg, *args, **kwargs) -> None:
        super().__init__(cfg, *args, **kwargs)
        self.key_backbone = frozen_copy(self.backbone)
        self.key_projector = frozen_copy(self.projector)
        queue = F.normalize(torch.randn(2, cfg.moco.queue_size, cfg.projector.out_dim), dim=2)
        self.register_buffer("queue", queue)

    def before_step(self, step: int) -> None:
        tau = momentum_at(step, self.total_steps, self.cfg.moco.momentum_start, self.cfg.moco.momentum_end)
        momentum_update([self.backbone, self.projector], [self.key_backbone, self.key_projector], tau)
        self.log("train/key_momentum", tau, on_step=True, on_epoch=False, batch_size=1)

    def ssl_loss(self, views: list[Tensor], z: list[Tensor]) -> tuple[Tensor, dict, Tensor]:
        k1, k2 = momentum_projections(self.key_backbone, self.key_projector, views[:2])
        q1, q2 = z[0], z[1]
        t = self.cfg.temperature
        loss = (infonce_queue(q1, k2, self.queue[1], t) + infonce_queue(q2, k1, self.queue[0], t)) / 2
        return loss, {}, torch.stack([k1, k2])

    @torch.no_grad()
    def enqueue(self, keys: Tensor, step: int) -> None:
        """Write this step's keys (2, B, d), gathered over ranks, over the oldest, after the optimiser step
        (the loss read the queue in place). The position follows from the step (the queue size is a
        multiple of the global batch), so no pointer needs saving."""
        keys = torch.stack([gather(keys[0]), gather(keys[1])])
        n = keys.shape[1]
        start = (step * n) % self.queue.shape[1]
        self.queue[:, start:start + n] = keys.to(self.queue.dtype)

    def collapsed_ssl_loss(self, global_batch: int) -> float | None:
        """log(1 + Q): the positive among Q equal negatives, once the queue holds only this run's keys."""
        queue = self.cfg.moco.queue_size
        return math.log(1 + queue) if global_batch * self.total_steps >= queue else None
