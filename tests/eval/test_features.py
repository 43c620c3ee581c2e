import numpy as np
import torch
from torch import nn

from clsp.features import extract_features


class MeanColumns(nn.Module):
    """A tiny 'backbone' whose features are the per-column means of channel 0 (flip-sensitive)."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(x)[:, 0].mean(dim=1)  # (B, W)


def test_features_are_batch_independent_and_mode_is_restored(digits16_train):
    images = digits16_train.images[:20]
    net = MeanColumns().train()
    a = extract_features(net, images, digits16_train.mean, digits16_train.std, 16, batch_size=3, device="cpu")
    b = extract_features(net, digits16_train.subset(np.arange(20)), digits16_train.mean, digits16_train.std, 16,
                         batch_size=7, device="cpu")
    assert a.shape == (20, 16) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)  # eval-mode BN: no dependence on batch composition, ndarray == ImageSet
    assert net.training  # the caller's mode comes back


def test_flip_mirrors_the_images(digits16_train):
    images = digits16_train.images[:10]
    net = MeanColumns()
    mean, std = digits16_train.mean, digits16_train.std
    flipped = extract_features(net, images, mean, std, 16, device="cpu", flip=True)
    mirrored = extract_features(net, np.ascontiguousarray(images[:, :, ::-1]), mean, std, 16, device="cpu")
    plain = extract_features(net, images, mean, std, 16, device="cpu")
    torch.testing.assert_close(flipped, mirrored)
    torch.testing.assert_close(flipped, plain.flip(1))  # column means, reversed
    assert not torch.allclose(flipped, plain)


def test_features_are_normalised_with_mean_and_std():
    images = np.full((4, 8, 8, 3), 255, dtype=np.uint8)
    feats = extract_features(nn.Flatten(), images, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 8, device="cpu")
    torch.testing.assert_close(feats, torch.full((4, 3 * 8 * 8), 2.0))  # (1 - 0.5) / 0.25


def test_a_progress_bar_only_for_more_than_one_batch(digits16_train, capsys):
    net, images = MeanColumns(), digits16_train.images[:6]
    extract_features(net, images, digits16_train.mean, digits16_train.std, 16, batch_size=8, device="cpu", progress=True)
    assert "features" not in capsys.readouterr().err                      # one batch: no bar
    extract_features(net, images, digits16_train.mean, digits16_train.std, 16, batch_size=3, device="cpu", progress=True)
    assert "features" in capsys.readouterr().err
