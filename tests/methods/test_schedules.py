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


def test_lars_step_by_hand_with_clipping():
    """solo-learn's LARS (clip_lr, eta 0.02, exclude_bias_n_norm) written out for four parameters."""
    lr, wd, eta, momentum = 0.4, 1e-5, 0.02, 0.9
    big = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))         # |w| = 5, |g| = 0.1: trust clipped to lr
    small = torch.nn.Parameter(torch.tensor([[0.3, 0.4]]))       # |w| = 0.5, |g| = 2: trust below lr
    bias = torch.nn.Parameter(torch.tensor([1.0, -1.0]))         # 1-d: plain SGD, no decay
    still = torch.nn.Parameter(torch.tensor([[2.0, 0.0]]))       # |g| = 0: no scaling, no decay
    big.grad, small.grad = torch.tensor([[0.06, 0.08]]), torch.tensor([[1.2, 1.6]])
    bias.grad, still.grad = torch.tensor([0.5, 0.25]), torch.zeros(1, 2)
    probe = torch.nn.Parameter(torch.tensor([[1.0, 1.0]]))
    probe.grad = torch.tensor([[0.1, 0.1]])
    opt = LARS([{"params": [big, small, bias, still]}, {"params": [probe], "lr": 0.1, "lars_exclude": True}],
               lr=lr, momentum=momentum, weight_decay=wd, eta=eta)
    w = {n: p.detach().clone() for n, p in [("big", big), ("small", small), ("bias", bias), ("still", still)]}
    g = {n: p.grad.clone() for n, p in [("big", big), ("small", small), ("bias", bias), ("still", still)]}
    opt.step()

    def ratio(name):                                              # eta |w| / (|g| + wd |w| + eps), clipped at lr
        wn, gn = w[name].norm().item(), g[name].norm().item()
        return min(eta * wn / (gn + wd * wn + 1e-8) / lr, 1.0)

    assert ratio("big") == 1.0 and ratio("small") < 0.02        # the clip bites for one, not the other
    d = {n: ratio(n) * (g[n] + wd * w[n]) for n in ("big", "small")}
    d["bias"], d["still"] = g["bias"], g["still"]
    for name, p in [("big", big), ("small", small), ("bias", bias), ("still", still)]:
        torch.testing.assert_close(p.detach(), w[name] - lr * d[name], rtol=1e-6, atol=1e-7, msg=name)
    torch.testing.assert_close(probe.detach(), torch.tensor([[0.99, 0.99]]))   # excluded group: SGD at its own lr
    # A second step with the same gradients: v = 0.9 v + d with d from the new weights.
    w2 = {n: p.detach().clone() for n, p in [("big", big), ("small", small)]}
    opt.step()
    wn, gn = w2["small"].norm().item(), g["small"].norm().item()
    d2 = min(eta * wn / (gn + wd * wn + 1e-8) / lr, 1.0) * (g["small"] + wd * w2["small"])
    torch.testing.assert_close(small.detach(), w2["small"] - lr * (momentum * d["small"] + d2), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(bias.detach(), w["bias"] - lr * g["bias"] - lr * (momentum + 1) * g["bias"])


def test_lars_without_clipping_is_the_plain_trust_ratio():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))                  # |w| = 5
    w.grad = torch.tensor([[0.6, 0.8]])                                 # |g| = 1
    LARS([w], lr=0.1, momentum=0.0, weight_decay=0.01, eta=0.02, clip_lr=False).step()
    trust = 0.02 * 5 / (1 + 0.01 * 5 + 1e-8)
    expected = torch.tensor([[3.0, 4.0]]) - 0.1 * trust * (torch.tensor([[0.6, 0.8]]) + 0.01 * torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(w.detach(), expected)


def test_lars_takes_timms_steps_except_on_a_zero_gradient():
    """timm.optim.Lars, set as this LARS (trust 0.02, clipped, the excluded group plain SGD), takes the same three
    steps, except that it decays a weight whose gradient is zero, which solo-learn leaves: why LARS is kept."""
    timm_optim = pytest.importorskip("timm.optim")
    lr, wd, eta = 0.4, 1e-3, 0.02
    torch.manual_seed(0)
    start = [torch.randn(4, 3), torch.randn(2, 2, 3), torch.randn(3, 2), torch.randn(5)]   # ..., still, bias
    ours, theirs = ([torch.nn.Parameter(w.clone()) for w in start] for _ in range(2))
    opt_ours = LARS([{"params": ours[:3]}, {"params": ours[3:], "weight_decay": 0.0, "lars_exclude": True}],
                    lr=lr, momentum=0.9, weight_decay=wd, eta=eta)
    opt_theirs = timm_optim.Lars([{"params": theirs[:3], "always_adapt": True},
                                  {"params": theirs[3:], "weight_decay": 0.0, "always_adapt": False}],
                                 lr=lr, momentum=0.9, weight_decay=wd, trust_coeff=eta, trust_clip=True)
    for _ in range(3):
        grads = [torch.randn_like(w) for w in start]
        grads[2].zero_()
        for params, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    for i in (0, 1, 3):
        torch.testing.assert_close(ours[i].detach(), theirs[i].detach(), msg=str(i))
    torch.testing.assert_close(ours[2].detach(), start[2])                           # solo-learn: not moved
    assert not torch.allclose(theirs[2].detach(), start[2])                          # timm: decayed


def test_param_groups_probe_and_lars_exclusions(tmp_path):
    from clsp.methods import method_class
    from clsp.methods.data import ViewMaker
    from clsp.training import ResidentBatches
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
