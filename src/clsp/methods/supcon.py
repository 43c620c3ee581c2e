"""SupCon (Khosla et al. 2020): every view of the global batch with the anchor's label attracts, the rest repel.

    L = SupCon(z1, z2; y, t)        (+ lambda * mean(2 - 2 cos(z1, z3)) for CLSP, added by the base)

The label-using upper reference beside the self-supervised methods, as the release runs it
(train_simclr_supervised.py): the two real views in one forward, temperature 0.2 (its configs; 0.1 is
only its function's default). The synthetic view enters through the CLSP term alone, as in every method.
"""

from __future__ import annotations

from torch import Tensor

from clsp.methods.base import ContrastiveMethod
from clsp.methods.losses import supcon


class SupCon(ContrastiveMethod):
    views_in_one_forward = True
    needs_labels = True

    def ssl_loss(self, views: list[Tensor], z: list[Tensor], labels: Tensor) -> tuple[Tensor, dict, None]:
        return supcon(z[:2], labels, self.cfg.temperature), {}, None
