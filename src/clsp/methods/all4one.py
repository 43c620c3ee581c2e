"""All4One (Estepa et al., ICCV 2023): neighbour contrast, centroid contrast and feature contrast.

With m the momentum projections (normalised), z the online projections, p = predictor(z),
c = centroid_predictor(z) and N_k(m) the k nearest support-set entries of m (nearest first):

    L_nn       = 1/2 [NNCLR(N_1(m1), p2) + NNCLR(N_1(m2), p1)]                           temperature t
    r_v        = T(N_k(m_v) + P)[0]                  the transformer's summary of view v's neighbours
    s_v        = T([c_v, N_{k-1}(m_v)] + P)[0]       the same with the prediction shifted in first
    L_centroid = 1/2 [NNCLR(r1, s2) + NNCLR(r2, s1)]                                     temperature t_c
    L_feature  = redundancy reduction between m and z of opposite views (losses.feature_correlation_loss)
    L          = w_nn L_nn + w_c L_centroid + w_f L_feature

T is a small transformer encoder and P solo-learn's positional encoding (`feature_axis_positions`).
The support set holds m1. All constants are in the `all4one` config section; the defaults and the
forward are solo-learn's (the authors' code): every view goes through the online and the momentum
encoder and through each predictor on its own, so batch-norm statistics are per view. The CLSP term
uses the online projections z1, z3.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from clsp.methods.base import MomentumMethod
from clsp.methods.losses import feature_correlation_loss, nearest_neighbours, nnclr_loss
from clsp.methods.memory_bank import random_bank
from clsp.models.heads import make_predictor


def feature_axis_positions(tokens: int, dim: int) -> Tensor:
    """solo-learn's `PositionalEncodingPermute1D(tokens)` on (B, tokens, dim) sequences, as a (tokens, dim) table.

    The sinusoid runs along the feature axis i = 0..dim-1 and the token j picks its frequency and phase:

        P[j, i] = sin(i f_{j // 2}) for even j,  cos(i f_{j // 2}) for odd j,   f_m = 10000^(-2m / c),

    with c = tokens rounded up to even. (Vaswani et al.'s encoding runs along the tokens instead.)
    """
    channels = 2 * math.ceil(tokens / 2)
    frequency = 1.0 / (10000 ** (torch.arange(0, channels, 2, dtype=torch.float32) / channels))
    angle = torch.arange(dim, dtype=torch.float32)[:, None] * frequency                 # (dim, channels / 2)
    table = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)                  # (dim, channels): sin, cos, ...
    return table[:, :tokens].T.contiguous()


class All4One(MomentumMethod):
    momentum_pairs = (("backbone", "momentum_backbone"), ("projector", "momentum_projector"))
    memory_bank, memory_size_key = "support", "all4one.support_size"

    def __init__(self, cfg, *args, **kwargs) -> None:
        super().__init__(cfg, *args, **kwargs)
        c, d = cfg.all4one, cfg.projector.out_dim
        self.predictor = make_predictor(d, c.predictor_hidden_dim)
        self.centroid_predictor = make_predictor(d, c.predictor_hidden_dim)
        layer = nn.TransformerEncoderLayer(d, c.heads, c.ff_dim, c.dropout, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.register_buffer("positions", feature_axis_positions(c.neighbours, d), persistent=False)
        self.register_buffer("support", random_bank(c.support_size, d))

    def lr_overrides(self) -> dict[str, float]:
        return {"transformer": self.cfg.all4one.transformer_lr}

    def summarise(self, sequences: Tensor) -> Tensor:
        """The transformer's output at the first token of each (B, k, d) sequence."""
        return self.transformer(sequences + self.positions)[:, 0]

    def momentum_range(self) -> tuple[float, float]:
        return self.cfg.all4one.momentum_start, self.cfg.all4one.momentum_end

    def ssl_loss(self, views: list[Tensor], z: list[Tensor]) -> tuple[Tensor, dict, Tensor]:
        c = self.cfg.all4one
        m1, m2 = self.target_projections(views[:2])
        z1, z2 = z[0], z[1]
        p1, p2 = self.predictor(z1), self.predictor(z2)
        c1, c2 = self.centroid_predictor(z1), self.centroid_predictor(z2)
        nn1 = nearest_neighbours(m1, self.support, c.neighbours)
        nn2 = nearest_neighbours(m2, self.support, c.neighbours)

        t = self.cfg.temperature
        loss_nn = (nnclr_loss(nn1[:, 0], p2, t) + nnclr_loss(nn2[:, 0], p1, t)) / 2

        shifted1 = torch.cat([c1[:, None].to(nn1.dtype), nn1[:, :-1]], dim=1)
        shifted2 = torch.cat([c2[:, None].to(nn2.dtype), nn2[:, :-1]], dim=1)
        r1, r2, s1, s2 = self.summarise(torch.cat([nn1, nn2, shifted1, shifted2])).chunk(4)
        loss_centroid = (nnclr_loss(r1, s2, c.centroid_temperature) + nnclr_loss(r2, s1, c.centroid_temperature)) / 2

        loss_feature = feature_correlation_loss(m1, m2, z1, z2, c.feature_scale)

        loss = c.nn_weight * loss_nn + c.centroid_weight * loss_centroid + c.feature_weight * loss_feature
        logs = {"train/loss_nn": loss_nn, "train/loss_centroid": loss_centroid, "train/loss_feature": loss_feature}
        return loss, logs, m1
