"""Learning-rate and momentum schedules, LARS's update, and the optimiser's parameter groups."""

from __future__ import annotations

import math

import pytest
import torch

from clsp.methods.base import momentum_at, warmup_cosine
from clsp.methods.lars import LARS


def test_warmup_then_cosine_to_zero():
    f = warmup_cosine(warmup_steps=10, total_steps=110, start_factor=0.01)
    assert f(0) == pytest.approx(0.01)
    assert f(5) == pytest.approx(0.01 + 0.99 * 0.5)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5)
    assert f(110) == pytest.approx(0.0, abs=1e-12)
    assert all(f(s) >= f(s + 1) for s in range(10, 110))


def test_key_momentum_rises_on_a_cosine():
    assert momentum_at(0, 100, 0.99, 0.999) == pytest.approx(0.99)
    assert momentum_at(50, 100, 0.99, 0.999) == pytest.approx(0.9945)
    assert momentum_at(100, 100, 0.99, 0.999) == pytest.approx(0.999)


def test_lars_step_by_hand():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))          # |w| = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    w.grad, b.grad = torch.tensor([0.6, 0.8]), torch.tensor([0.5])  # |g| = 1
    opt = LARS([{"params": [w]}, {"params": [b], "weight_decay": 0.0, "lars_exclude": True}],
               lr=0.1, momentum=0.9, weight_decay=0.01, eta=0.02)
    opt.step()
    trust = 0.02 * 5 / (1 + 0.01 * 5)
    expected = torch.tensor([3.0, 4.0]) - 0.1 * trust * (torch.tensor([0.6, 0.8]) + 0.01 * torch.tensor([3.0, 4.0]))
    assert torch.allclose(w.detach(), expected)
    assert b.item() == pytest.approx(1.0 - 0.1 * 0.5)                  # plain SGD for excluded groups
    opt.step()                                                         # momentum accumulates
    assert b.item() == pytest.approx(0.95 - 0.1 * (0.9 * 0.5 + 0.5))


def test_param_groups_probe_and_lars_exclusions(tmp_path):
    from clsp.methods import method_class
    from clsp.methods.data import ResidentBatches, ViewMaker
    from methods_helpers import tiny_config

    cfg = tiny_config(tmp_path, "method=all4one", "optimizer=lars")
    data = ResidentBatches(torch.zeros(32, 8, 8, 3, dtype=torch.uint8), None, 16, 0)
    module = method_class("all4one")(cfg, data, ViewMaker(torch.nn.Identity(), None), 2, num_classes=10)
    groups = {g["name"]: g for g in module.param_groups()}
    assert groups["probe"]["lr"] == cfg.probe.lr and groups["probe"]["weight_decay"] == 0.0
    assert groups["transformer"]["lr"] == cfg.all4one.transformer_lr
    assert all(p.ndim <= 1 for p in groups["no_decay"]["params"]) and groups["no_decay"]["lars_exclude"]
    assert all(p.ndim > 1 for p in groups["ssl"]["params"])
    named = {id(p) for g in groups.values() for p in g["params"]}
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    assert named == trainable                                          # every trainable parameter, once
    assert not any(p.requires_grad for p in module.momentum_backbone.parameters())
    assert math.isclose(sum(len(g["params"]) for g in groups.values()), len(trainable))
