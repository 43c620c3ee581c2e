"""Views in one forward with per-view BatchNorm statistics equal one forward per view (clsp.models.view_norm)."""

from __future__ import annotations

import copy

import pytest
import torch

from clsp.models.backbones import make_backbone
from clsp.models.heads import make_projector
from clsp.models.view_norm import per_view_batchnorm, views_apart


def test_one_forward_with_views_apart_equals_a_forward_per_view():
    torch.manual_seed(0)
    backbone, dim = make_backbone("resnet10", "cifar", width=8)
    net = torch.nn.Sequential(backbone, make_projector(dim, 32, 16, layers=3, batchnorm=True))
    apart = per_view_batchnorm(copy.deepcopy(net))
    views = [torch.randn(4, 3, 8, 8) + i for i in range(3)]     # views with different statistics

    separate = torch.cat([net(v) for v in views])
    with views_apart(3, apart):
        together = apart(torch.cat(views))
    (separate.square().sum()).backward()
    (together.square().sum()).backward()

    torch.testing.assert_close(together, separate, rtol=1e-5, atol=1e-5)
    for (name, a), b in zip(apart.named_parameters(), net.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)
    for (name, a), b in zip(apart.named_buffers(), net.buffers()):   # running statistics updated once per view
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert set(apart.state_dict()) == set(net.state_dict())


def test_outside_the_block_and_in_eval_mode_batchnorm_is_plain():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(5)
    apart = per_view_batchnorm(copy.deepcopy(bn))
    x = torch.randn(6, 5) * torch.arange(6.0)[:, None]
    torch.testing.assert_close(apart(x), bn(x))                   # no block: statistics over the whole batch
    apart.eval(), bn.eval()
    with views_apart(3, apart):
        torch.testing.assert_close(apart(x), bn(x))               # eval mode: running statistics, no chunks
    apart.train()
    with views_apart(4, apart), pytest.raises(ValueError, match="not 4 equal views"):
        apart(x)


def test_another_librarys_batchnorm_subclass_normalises_views_apart_too():
    """timm's BatchNormAct2d (BatchNorm, then its activation), as in timm's EfficientNets."""
    layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    bn = layers.BatchNormAct2d(4)
    apart = per_view_batchnorm(copy.deepcopy(bn))
    assert isinstance(apart, layers.BatchNormAct2d) and set(apart.state_dict()) == set(bn.state_dict())
    views = [torch.randn(3, 4, 5, 5) * (i + 1) + i for i in range(2)]
    separate = torch.cat([bn(v) for v in views])
    with views_apart(2, apart):
        torch.testing.assert_close(apart(torch.cat(views)), separate)
    torch.testing.assert_close(apart.running_mean, bn.running_mean)
