"""BYOL (Grill et al. 2020): the online branch predicts the target branch's projection of the other view.

    tau_s = 1 - (1 - tau_0) (cos(pi s / S) + 1) / 2            target momentum, 0.99 -> 1; applied before step s + 1
    p_v   = predictor(z_v)                                     z_v the online projection of view v
    L     = (2 - 2 cos(p1, sg(m2))) + (2 - 2 cos(p2, sg(m1)))  m_v the target projection, batch means

No negatives, so no memory bank; the target encoder (backbone and projector) is the momentum copy.
The loss and the schedule are solo-learn's (cifar/byol.yaml: tau 0.99 -> 1.0); the predictor has the
projector's hidden width, as in the paper. Every view goes through each encoder on its own (the base's
default). The CLSP term uses the online projections z1, z3; the base adds it.
"""

from __future__ import annotations

from torch import Tensor

from clsp.methods.base import MomentumMethod
from clsp.methods.losses import byol_loss
from clsp.models.heads import make_predictor


class BYOL(MomentumMethod):
    momentum_pairs = (("backbone", "momentum_backbone"), ("projector", "momentum_projector"))

    def __init__(self, cfg, *args, **kwargs) -> None:
        super().__init__(cfg, *args, **kwargs)
        self.predictor = make_predictor(cfg.projector.out_dim, cfg.projector.hidden_dim)

    def momentum_range(self) -> tuple[float, float]:
        return 0.99, 1.0

    def ssl_loss(self, views: list[Tensor], z: list[Tensor]) -> tuple[Tensor, dict, None]:
        m1, m2 = self.target_projections(views[:2])
        p1, p2 = self.predictor(z[0]), self.predictor(z[1])
        return byol_loss(p1, m2) + byol_loss(p2, m1), {}, None
