"""SimCLR (Chen et al. 2020): the two views of an image attract, every other view of the global batch repels.

    L = NT-Xent(z1, z2; t)        (+ lambda * mean(2 - 2 cos(z1, z3)) for CLSP, added by the base)
"""

from __future__ import annotations

from torch import Tensor

from clsp.methods.base import ContrastiveMethod
from clsp.methods.losses import nt_xent


class SimCLR(ContrastiveMethod):
    def ssl_loss(self, views: list[Tensor], z: list[Tensor], step: int) -> Tensor:
        return nt_xent(z[:2], self.cfg.temperature)
