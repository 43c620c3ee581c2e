import pytest
import torch

from clsp.data.config import DatasetConfig
from clsp.eval.linear import (LinearProbeConfig, epoch_plan, topk_accuracy, train_linear_probe,
                              train_linear_probe_on_the_fly)


def test_probe_learns_a_separable_toy_set():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 3
    y = torch.arange(400) % 4
    x = centres[y] + 0.3 * torch.randn(400, 16, generator=g)
    cfg = LinearProbeConfig(epochs=10, milestones=[6, 8])
    layer, losses = train_linear_probe(x[:300], x[:300], y[:300], 4, cfg)
    acc = topk_accuracy(layer, x[300:], y[300:])
    assert acc[1] >= 99.0 and acc[5] == 100.0
    assert losses[-1] < losses[0]


def test_flip_decisions_are_seeded_and_fair():
    order, flips = epoch_plan(1000, seed=3, epoch=5)
    order2, flips2 = epoch_plan(1000, seed=3, epoch=5)
    assert torch.equal(order, order2) and torch.equal(flips, flips2)
    assert sorted(order.tolist()) == list(range(1000))
    assert 0.44 < flips.float().mean() < 0.56
    assert not torch.equal(flips, epoch_plan(1000, seed=3, epoch=6)[1])


def test_mirror_features_are_used_when_flipped():
    # features of the original say class 0, of the mirror class 1: the probe sees both, half the time each
    feats = torch.tensor([[1.0, 0.0]]).repeat(64, 1)
    mirror = torch.tensor([[0.0, 1.0]]).repeat(64, 1)
    labels = torch.zeros(64, dtype=torch.long)
    layer, _ = train_linear_probe(feats, mirror, labels, 2, LinearProbeConfig(epochs=3, batch_size=16, milestones=[]))
    # both inputs were trained towards class 0: both now predict it
    assert topk_accuracy(layer, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]), ks=(1,))[1] == 100.0


def test_precomputed_flips_equal_the_on_the_fly_protocol(digits16_train):
    from clsp.features import extract_features
    from clsp.models.backbones import make_backbone

    torch.manual_seed(0)
    backbone, _ = make_backbone("resnet18", "cifar")
    images, labels = digits16_train.images[:32], digits16_train.labels[:32]
    mean, std = digits16_train.mean, digits16_train.std
    with torch.no_grad():  # give BatchNorm non-trivial running statistics, then freeze in eval mode
        backbone(torch.randn(32, 3, 16, 16) * 2 + 1)
    backbone.eval()
    cfg = LinearProbeConfig(epochs=2, batch_size=16, lr=1.0, milestones=[1], seed=7)
    feats = extract_features(backbone, images, mean, std, 16, device="cpu")
    mirror = extract_features(backbone, images, mean, std, 16, device="cpu", flip=True)
    fast, fast_losses = train_linear_probe(feats, mirror, labels, 10, cfg)
    slow, slow_losses = train_linear_probe_on_the_fly(backbone, images, labels, mean, std, 16, 10, cfg, device="cpu")
    assert not torch.allclose(feats, mirror)  # flips matter
    torch.testing.assert_close(fast.weight, slow.weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.bias, slow.bias, rtol=1e-4, atol=1e-5)
    assert fast_losses == pytest.approx(slow_losses, rel=1e-4)
    # a different seed gives different flips and order, hence a different classifier
    other, _ = train_linear_probe(feats, mirror, labels, 10, LinearProbeConfig(epochs=2, batch_size=16, milestones=[1], seed=8))
    assert not torch.allclose(fast.weight, other.weight, atol=1e-4)


def test_linear_eval_of_an_encoder_file_writes_metrics(encoder_file, tmp_path, capsys):
    from clsp.eval.linear import linear_eval
    from clsp.eval.metrics import read_metrics

    data = DatasetConfig(name="digits", subset=200)
    cfg = LinearProbeConfig(epochs=20, batch_size=64, lr=0.5, milestones=[12, 16])
    metrics = linear_eval(encoder_file, data, tmp_path / "linear", cfg, device="cpu", progress=False)
    assert metrics == read_metrics(tmp_path / "linear")
    assert metrics["kind"] == "linear" and metrics["encoder"]["method"] == "random"
    assert metrics["dataset"]["image_size"] == 16 and metrics["dataset"]["split"] == "test"
    res = metrics["results"]
    assert len(res["train_loss"]) == 20 and 0 <= res["top1"] <= res["top5"] <= 100
    assert res["top1"] > 30  # random ResNet features of digits are far above chance (10%)
    assert (tmp_path / "linear" / "done.json").is_file()
    # the same evaluation again is recognised as done and not recomputed
    capsys.readouterr()
    again = linear_eval(encoder_file, data, tmp_path / "linear", cfg, device="cpu", progress=False)
    assert again["created_at"] == metrics["created_at"]
    shown = capsys.readouterr().out
    assert "up to date" in shown and f"{res['top1']:.2f}" in shown  # the recorded table, shown again
