"""SimCLR (Chen et al. 2020): the two views of an image attract, every other view of the global batch repels.

    L = NT-Xent(z1, z2; t)        (+ lambda * mean(2 - 2 cos(z1, z3)) for CLSP, added by the base)

All views go through backbone and projector in one forward, as in the release's SimCLR (it
concatenates x1, x2 and the synthetic x3): BatchNorm normalises them with statistics of all views.
"""

from __future__ import annotations

import math

from torch import Tensor

from clsp.methods.base import ContrastiveMethod
from clsp.methods.losses import nt_xent


class SimCLR(ContrastiveMethod):
    views_in_one_forward = True

    def ssl_loss(self, views: list[Tensor], z: list[Tensor]) -> tuple[Tensor, dict, None]:
        return nt_xent(z[:2], self.cfg.temperature), {}, None

    def collapsed_ssl_loss(self, global_batch: int) -> float:
        return math.log(2 * global_batch - 1)     # one positive among 2N - 1 equal logits
