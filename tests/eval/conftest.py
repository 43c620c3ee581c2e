"""Fixtures for the evaluation tests: small real data (digits) and a small randomly initialised encoder."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def digits16_train():
    from clsp.data import load_dataset

    return load_dataset("digits", "train", size=16)


@pytest.fixture(scope="session")
def digits16_test():
    from clsp.data import load_dataset

    return load_dataset("digits", "test", size=16)


@pytest.fixture(scope="session")
def encoder_file(tmp_path_factory):
    """An encoder file as `clsp pretrain` writes it: a random ResNet-18 with a CIFAR stem, digits at 16 px."""
    import torch

    from clsp.data.mnist import DIGITS_MEAN, DIGITS_STD
    from clsp.models.backbones import make_backbone
    from clsp.models.encoder import save_encoder

    torch.manual_seed(0)
    backbone, feat_dim = make_backbone("resnet18", "cifar")
    mean, std = DIGITS_MEAN, DIGITS_STD
    path = tmp_path_factory.mktemp("encoder") / "encoder.safetensors"
    save_encoder(path, backbone, {"arch": "resnet18", "stem": "cifar", "feat_dim": feat_dim, "image_size": 16,
                                  "mean": list(mean), "std": list(std), "dataset": "digits", "method": "random",
                                  "clsp_lambda": 0.0})
    return path
