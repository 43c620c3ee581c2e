"""All4One (Estepa et al., ICCV 2023): neighbour contrast, centroid contrast and feature contrast.

With m the momentum projections (normalised), z the online projections, p = predictor(z),
c = centroid_predictor(z) and N_k(m) the k nearest support-set entries of m (nearest first):

    L_nn       = 1/2 [NNCLR(N_1(m1), p2) + NNCLR(N_1(m2), p1)]                           temperature t
    r_v        = T(N_k(m_v) + P)[0]                  the transformer's summary of view v's neighbours
    s_v        = T([c_v, N_{k-1}(m_v)] + P)[0]       the same with the prediction shifted in first
    L_centroid = 1/2 [NNCLR(r1, s2) + NNCLR(r2, s1)]                                     temperature t_c
    L_feature  = redundancy reduction between m and z of opposite views (losses.feature_correlation_loss)
    L          = w_nn L_nn + w_c L_centroid + w_f L_feature

T is a small transformer encoder, P sinusoidal positions over the k tokens. The support set holds m1.
All constants are in the `all4one` config section. The CLSP term uses the online projections z1, z3.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clsp.methods.base import ContrastiveMethod, frozen_copy, momentum_at, momentum_update
from clsp.methods.losses import feature_correlation_loss, gather, nearest_neighbours, nnclr_loss
from clsp.models.heads import make_predictor


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """Vaswani et al.'s encoding: PE[i, 2j] = sin(i / 10000^(2j/d)), PE[i, 2j+1] = cos(...)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * frequency)
    pe[:, 1::2] = torch.cos(position * frequency)
    return pe


class All4One(ContrastiveMethod):
    def __init__(self, cfg, *args, **kwargs) -> None:
        super().__init__(cfg, *args, **kwargs)
        c, d = cfg.all4one, cfg.projector.out_dim
        self.predictor = make_predictor(d, c.predictor_hidden_dim)
        self.centroid_predictor = make_predictor(d, c.predictor_hidden_dim)
        self.momentum_backbone = frozen_copy(self.backbone)
        self.momentum_projector = frozen_copy(self.projector)
        layer = nn.TransformerEncoderLayer(d, c.heads, c.ff_dim, c.dropout, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.register_buffer("positions", sinusoidal_positions(c.neighbours, d), persistent=False)
        self.register_buffer("support", F.normalize(torch.randn(c.support_size, d), dim=1))

    def lr_overrides(self) -> dict[str, float]:
        return {"transformer": self.cfg.all4one.transformer_lr}

    def summarise(self, sequences: Tensor) -> Tensor:
        """The transformer's output at the first token of each (B, k, d) sequence."""
        return self.transformer(sequences + self.positions)[:, 0]

    def ssl_loss(self, views: list[Tensor], z: list[Tensor], step: int) -> Tensor:
        c = self.cfg.all4one
        tau = momentum_at(step, self.total_steps, c.momentum_start, c.momentum_end)
        momentum_update([self.backbone, self.projector], [self.momentum_backbone, self.momentum_projector], tau)
        with torch.no_grad():
            momentum_z = self.momentum_projector(self.momentum_backbone(torch.cat(views[:2]))).float()
            m1, m2 = F.normalize(momentum_z, dim=1).chunk(2)
        z1, z2 = z[0], z[1]
        p1, p2 = self.predictor(torch.cat([z1, z2])).chunk(2)
        c1, c2 = self.centroid_predictor(torch.cat([z1, z2])).chunk(2)
        nn1 = nearest_neighbours(m1, self.support, c.neighbours)
        nn2 = nearest_neighbours(m2, self.support, c.neighbours)

        t = self.cfg.temperature
        loss_nn = (nnclr_loss(nn1[:, 0], p2, t) + nnclr_loss(nn2[:, 0], p1, t)) / 2

        shifted1 = torch.cat([c1[:, None].to(nn1.dtype), nn1[:, :-1]], dim=1)
        shifted2 = torch.cat([c2[:, None].to(nn2.dtype), nn2[:, :-1]], dim=1)
        r1, r2, s1, s2 = self.summarise(torch.cat([nn1, nn2, shifted1, shifted2])).chunk(4)
        loss_centroid = (nnclr_loss(r1, s2, c.centroid_temperature) + nnclr_loss(r2, s1, c.centroid_temperature)) / 2

        loss_feature = feature_correlation_loss(m1, m2, z1, z2, c.feature_scale)

        self.enqueue(gather(m1), step)
        self.log_dict({"train/loss_nn": loss_nn, "train/loss_centroid": loss_centroid,
                       "train/loss_feature": loss_feature}, on_step=True, on_epoch=False, batch_size=len(z[0]))
        return c.nn_weight * loss_nn + c.centroid_weight * loss_centroid + c.feature_weight * loss_feature

    @torch.no_grad()
    def enqueue(self, m: Tensor, step: int) -> None:
        n = len(m)
        start = (step * n) % len(self.support)
        self.support[start:start + n] = m.to(self.support.dtype)
