"""Several views in one forward, with BatchNorm statistics still computed per view.

Convolutions, ReLUs, pooling and linear layers treat every sample on its own, so concatenating the views
changes nothing in them but the number of calls. That number matters: a wide layer costs about the same
per call whatever the batch once the batch is small (on a CPU its weights are reordered and read, and
their gradient written, once per call), so one forward per view paid the weights' cost once per view.
BatchNorm is the only layer that mixes samples. With `views_apart(n, ...)`, every BatchNorm converted by
`per_view_batchnorm` normalises each of the n equal chunks of its input with that chunk's statistics and
updates its running statistics once per chunk, in order: the arithmetic of n separate forwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn


class _ViewsApart:
    """BatchNorm whose training-mode forward normalises `views` equal chunks of the batch apart."""

    views: int = 1

    def forward(self, x: Tensor) -> Tensor:
        if self.views == 1 or not self.training:
            return super().forward(x)
        if len(x) % self.views:
            raise ValueError(f"a batch of {len(x)} is not {self.views} equal views")
        return torch.cat([super(_ViewsApart, self).forward(chunk) for chunk in x.chunk(self.views)])


class ViewBatchNorm1d(_ViewsApart, nn.BatchNorm1d):
    pass


class ViewBatchNorm2d(_ViewsApart, nn.BatchNorm2d):
    pass


_CONVERTED: dict[type, type] = {nn.BatchNorm1d: ViewBatchNorm1d, nn.BatchNorm2d: ViewBatchNorm2d}


def _per_view_class(cls: type) -> type:
    """The per-view version of a BatchNorm class: torch's own, or another library's subclass (timm's BatchNormAct2d)."""
    if cls not in _CONVERTED:
        _CONVERTED[cls] = type(f"View{cls.__name__}", (_ViewsApart, cls), {"__module__": __name__})
    return _CONVERTED[cls]


def per_view_batchnorm(module: nn.Module) -> nn.Module:
    """Give every BatchNorm in `module` (any subclass of torch's, timm's included) the per-view forward, in place:
    the same modules (parameters, buffers, state-dict keys) with their class extended, so checkpoints and encoders
    load as before."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and not isinstance(layer, _ViewsApart):
            layer.__class__ = _per_view_class(type(layer))
    return module


@contextmanager
def views_apart(views: int, *modules: nn.Module) -> Iterator[None]:
    """Within the block, the converted BatchNorms of `modules` normalise `views` equal chunks apart."""
    layers = [layer for m in modules for layer in m.modules() if isinstance(layer, _ViewsApart)]
    for layer in layers:
        layer.views = views
    try:
        yield
    finally:
        for layer in layers:
            layer.views = 1
