"""NNCLR (Dwibedi et al. 2021): the positive of a view is the nearest neighbour of the other view's
projection in a support set of past projections.

    NN(z) = argmax_{s in S} cos(z, s)                          top-1 over the support set S
    L = 1/2 [NNCLR(NN(z1), p2) + NNCLR(NN(z2), p1)]           p = predictor(z), negatives p_j of the batch
    S <- enqueue(z1 / |z1| over the global batch)              clsp.methods.memory_bank

The recipe is solo-learn's (cifar/nnclr.yaml: 3-layer projector with batch norm, predictor hidden 4096,
support set 65536, LARS, the asymmetric augmentation) and so is its forward: every view goes through
backbone, projector and predictor on its own, so batch-norm statistics are per view. The CLSP term is
taken on the projections z1, z3; the base adds it.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from clsp.methods.base import ContrastiveMethod
from clsp.methods.losses import nearest_neighbours, nnclr_loss
from clsp.methods.memory_bank import random_bank
from clsp.models.heads import make_predictor


class NNCLR(ContrastiveMethod):
    memory_bank, memory_size_key = "support", "nnclr.support_size"

    def __init__(self, cfg, *args, **kwargs) -> None:
        super().__init__(cfg, *args, **kwargs)
        d = cfg.projector.out_dim
        self.predictor = make_predictor(d, cfg.nnclr.predictor_hidden_dim)
        self.register_buffer("support", random_bank(cfg.nnclr.support_size, d))

    def ssl_loss(self, views: list[Tensor], z: list[Tensor]) -> tuple[Tensor, dict, Tensor]:
        z1, z2 = z[0], z[1]
        p1, p2 = self.predictor(z1), self.predictor(z2)
        nn1 = nearest_neighbours(z1.detach(), self.support)[:, 0]
        nn2 = nearest_neighbours(z2.detach(), self.support)[:, 0]
        t = self.cfg.temperature
        loss = (nnclr_loss(nn1, p2, t) + nnclr_loss(nn2, p1, t)) / 2
        return loss, {}, F.normalize(z1.detach().float(), dim=1)

    def collapsed_ssl_loss(self, global_batch: int) -> float:
        return math.log(global_batch)             # one positive among the batch's N equal logits
