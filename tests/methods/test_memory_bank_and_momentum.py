"""The shared pieces of the methods: the memory bank against lightly's FIFO, the momentum base's target
update by hand, the checkpoint keys the refactor kept, and BYOL against solo-learn's equations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightly.models.modules.memory_bank import MemoryBankModule
from methods_helpers import tiny_config

from clsp.methods import method_class
from clsp.methods.base import momentum_at
from clsp.methods.data import ViewMaker
from clsp.methods.losses import byol_loss
from clsp.methods.memory_bank import enqueue, random_bank
from clsp.training import ResidentBatches

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def make_module(tmp_path, method: str, *overrides: str):
    cfg = tiny_config(tmp_path, f"method={method}", *overrides)
    data = ResidentBatches(torch.zeros(32, 8, 8, 3, dtype=torch.uint8), None, 16, 0)
    torch.manual_seed(0)
    return method_class(method)(cfg, data, ViewMaker(torch.nn.Identity(), None), steps_per_epoch=2, num_classes=10)


# -- the memory bank -------------------------------------------------------------------------------

def test_enqueue_is_lightlys_fifo_step_after_step():
    """Seven batches of 4 through a bank of 12 (wrapping twice) leave it as lightly's MemoryBankModule."""
    torch.manual_seed(0)
    ours = random_bank(12, 5)
    theirs = MemoryBankModule(size=(12, 5), feature_dim_first=False)
    theirs.bank = ours.clone()
    for step in range(7):
        batch = torch.randn(4, 5)
        enqueue(ours, batch, step)
        theirs._dequeue_and_enqueue(batch)
        assert torch.equal(ours, theirs.bank), step
    assert torch.allclose(random_bank(3, 7, 5).norm(dim=-1), torch.ones(3, 7))


def test_a_bank_per_view_is_written_as_separate_banks():
    torch.manual_seed(1)
    both = random_bank(2, 8, 3)
    first, second = both[0].clone(), both[1].clone()
    for step in range(3):
        keys = torch.randn(2, 4, 3)
        enqueue(both, keys, step)
        enqueue(first, keys[0], step)
        enqueue(second, keys[1], step)
    assert torch.equal(both[0], first) and torch.equal(both[1], second)


# -- the momentum base -----------------------------------------------------------------------------

@pytest.mark.parametrize("method, targets", [("moco", ("key_backbone", "key_projector")),
                                             ("all4one", ("momentum_backbone", "momentum_projector")),
                                             ("byol", ("momentum_backbone", "momentum_projector"))])
def test_targets_start_as_copies_and_follow_the_online_encoder(tmp_path, method, targets):
    module = make_module(tmp_path, method)
    online = [module.backbone, module.projector]
    target = [getattr(module, name) for name in targets]
    for o, t in zip(online, target):
        assert all(torch.equal(a, b) for a, b in zip(o.parameters(), t.parameters()))
        assert not any(p.requires_grad for p in t.parameters())
    with torch.no_grad():
        for p in module.backbone.parameters():
            p.add_(1.0)
    before = [p.clone() for t in target for p in t.parameters()]
    module.before_step(2)
    tau = momentum_at(1, module.total_steps, *module.momentum_range())
    after = [p for t in target for p in t.parameters()]
    expected = [tau * b + (1 - tau) * o for b, o in zip(before, [p for m in online for p in m.parameters()])]
    for a, e in zip(after, expected):
        torch.testing.assert_close(a, e)


def test_momentum_before_each_step_is_solo_learns(tmp_path, monkeypatch):
    """solo-learn updates after step k with tau(k) (then moves tau on): before step s we apply tau(s - 1),
    written out here for 4 steps from 0.99 to 0.999: tau(k) = 0.999 - 0.009 (cos(pi k / 4) + 1) / 2."""
    module = make_module(tmp_path, "byol")
    module.total_steps = 4
    seen = []
    monkeypatch.setattr("clsp.methods.base.momentum_update", lambda online, target, tau: seen.append(tau))
    monkeypatch.setattr(module, "momentum_range", lambda: (0.99, 0.999))
    for step in range(5):
        module.before_step(step)
    assert seen == pytest.approx([0.99, 0.99, 0.99131802, 0.9945, 0.99768198])


def test_checkpoint_keys_are_those_before_the_momentum_base(tmp_path):
    """Runs saved before the refactor resume: the same top-level names and bank buffers as then."""
    expected = {"moco": ({"backbone", "projector", "probe", "key_backbone", "key_projector", "queue"}, "queue", (2, 64, 32)),
                "nnclr": ({"backbone", "projector", "probe", "predictor", "support"}, "support", (64, 32)),
                "all4one": ({"backbone", "projector", "probe", "predictor", "centroid_predictor", "momentum_backbone",
                             "momentum_projector", "transformer", "support"}, "support", (64, 32))}
    for method, (names, bank, shape) in expected.items():
        module = make_module(tmp_path, method)
        assert {key.split(".")[0] for key in module.state_dict()} == names, method
        assert module.memory_bank == bank and tuple(getattr(module, bank).shape) == shape


# -- BYOL against solo-learn's equations ----------------------------------------------------------------

def solo_learn_byol_loss_func(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """solo-learn's byol_loss_func (the non-simplified branch), transcribed."""
    p, z = F.normalize(p, dim=-1), F.normalize(z, dim=-1)
    return 2 - 2 * (p * z.detach()).sum(dim=1).mean()


def test_byol_loss_is_solo_learns():
    g = torch.Generator().manual_seed(3)
    p, z = torch.randn(16, 8, generator=g, requires_grad=True), torch.randn(16, 8, generator=g, requires_grad=True)
    torch.testing.assert_close(byol_loss(p, z), solo_learn_byol_loss_func(p, z))
    byol_loss(p, z).backward()
    assert p.grad is not None and z.grad is None                       # the target is a stop-gradient
    assert byol_loss(z, z).abs().item() < 1e-6                           # a perfect prediction costs nothing


def test_byol_step_loss_equals_solo_learns_training_step(tmp_path):
    module = make_module(tmp_path, "byol", "projector.layers=2", "projector.batchnorm=true")
    with torch.no_grad():                                                # targets apart from the online encoder
        for p in module.momentum_projector.parameters():
            p.add_(0.1 * torch.randn_like(p))
    torch.manual_seed(1)
    x1, x2 = torch.randn(16, 3, 8, 8), torch.randn(16, 3, 8, 8)
    z1, z2 = module.projector(module.backbone(x1)), module.projector(module.backbone(x2))
    p1, p2 = module.predictor(z1), module.predictor(z2)
    with torch.no_grad():
        z1_momentum = module.momentum_projector(module.momentum_backbone(x1))
        z2_momentum = module.momentum_projector(module.momentum_backbone(x2))
    theirs = solo_learn_byol_loss_func(p1, z2_momentum) + solo_learn_byol_loss_func(p2, z1_momentum)
    _, z = module.encode([x1, x2])
    ours, _, entries = module.ssl_loss([x1, x2], z)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert entries is None and module.momentum_range() == (0.99, 1.0)    # solo-learn's cifar/byol.yaml
    assert module.predictor[0].out_features == module.cfg.projector.hidden_dim
