"""Projection and prediction heads: small MLPs on top of the backbone's pooled features."""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, batchnorm: bool = False,
        last_batchnorm: bool = False) -> nn.Sequential:
    """Linear - [BN] - ReLU - ... - Linear (`layers` linear layers), optionally BN on the output."""
    mods: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(dim, hidden_dim)]
        if batchnorm:
            mods += [nn.BatchNorm1d(hidden_dim)]
        mods += [nn.ReLU(inplace=True)]
        dim = hidden_dim
    mods += [nn.Linear(dim, out_dim)]
    if last_batchnorm:
        mods += [nn.BatchNorm1d(out_dim)]
    return nn.Sequential(*mods)


def make_projector(feat_dim: int, hidden_dim: int = 4096, out_dim: int = 256, layers: int = 2,
                   batchnorm: bool = False, output_batchnorm: bool | None = None) -> nn.Sequential:
    """The paper's projector is Linear(feat, 4096) - ReLU - Linear(4096, 256), no batch norm;
    NNCLR's and All4One's (solo-learn) are 3 layers with batch norm throughout (output included);
    BYOL's (solo-learn) is Linear - BN - ReLU - Linear, no BN on the output (`output_batchnorm=False`)."""
    last = batchnorm if output_batchnorm is None else output_batchnorm
    return mlp(feat_dim, hidden_dim, out_dim, layers, batchnorm, last_batchnorm=last)


def make_predictor(dim: int = 256, hidden_dim: int = 4096) -> nn.Sequential:
    """NNCLR / All4One predictor: Linear - BN - ReLU - Linear, back to the projection size."""
    return mlp(dim, hidden_dim, dim, layers=2, batchnorm=True)
