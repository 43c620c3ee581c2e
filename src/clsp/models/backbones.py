"""torchvision ResNets as feature extractors, with the stems the paper uses per image size."""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock, ResNet

from clsp.errors import UserError


def resnet10(weights=None) -> ResNet:
    """ResNet-18's layout with one basic block per stage: a third of its cost, for CPU tests and demos."""
    assert weights is None
    return ResNet(BasicBlock, [1, 1, 1, 1])


ARCHS = {"resnet18": (resnet18, 512), "resnet50": (resnet50, 2048), "resnet10": (resnet10, 512)}
STEMS = ("cifar", "stl", "imagenet")


def make_backbone(arch: str = "resnet18", stem: str = "cifar") -> tuple[nn.Module, int]:
    """A randomly initialised ResNet whose forward returns avg-pooled features (fc removed).

    stem `cifar`: 3x3 stride-1 first conv, no max-pool (32x32 images).
    stem `stl`: 3x3 stride-1 first conv, max-pool kept (64x64 images).
    stem `imagenet`: torchvision's 7x7 stride-2 conv and max-pool (224x224 images).
    """
    if arch not in ARCHS:
        raise UserError(f"unknown backbone '{arch}'; choose one of {', '.join(ARCHS)}")
    if stem not in STEMS:
        raise UserError(f"unknown stem '{stem}'; choose one of {', '.join(STEMS)}")
    build, feat_dim = ARCHS[arch]
    net = build(weights=None)
    if stem in ("cifar", "stl"):
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    if stem == "cifar":
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, feat_dim
