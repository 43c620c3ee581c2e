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


def scale_width(net: ResNet, width: int) -> ResNet:
    """Rebuild `net`'s stem and stages `width / 64` times as wide (64, 128, 256, 512 -> width x 1, 2, 4, 8), with
    torchvision's layers and initialisation: torchvision fixes a basic block's widths, and a CPU study needs a
    ResNet-18 a quarter of the cost (width 32) more than a different network."""
    block = type(net.layer1[0])
    depths = [len(getattr(net, f"layer{i}")) for i in range(1, 5)]
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    for i, depth in enumerate(depths):
        setattr(net, f"layer{i + 1}", net._make_layer(block, width * 2 ** i, depth, stride=1 if i == 0 else 2))
    for m in net.modules():                                   # torchvision's ResNet initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return net


def make_backbone(arch: str = "resnet18", stem: str = "cifar", width: int = 64) -> tuple[nn.Module, int]:
    """A randomly initialised ResNet whose forward returns avg-pooled features (fc removed).

    stem `cifar`: 3x3 stride-1 first conv, no max-pool (32x32 images).
    stem `stl`: 3x3 stride-1 first conv, max-pool kept (64x64 images).
    stem `imagenet`: torchvision's 7x7 stride-2 conv and max-pool (224x224 images).
    width: channels of the first stage (64: torchvision's networks, unchanged).
    """
    if arch not in ARCHS:
        raise UserError(f"unknown backbone '{arch}'; choose one of {', '.join(ARCHS)}")
    if stem not in STEMS:
        raise UserError(f"unknown stem '{stem}'; choose one of {', '.join(STEMS)}")
    if width < 8 or width % 8:
        raise UserError(f"backbone width must be a multiple of 8 (64: the standard ResNet), got {width}")
    build, feat_dim = ARCHS[arch]
    net = build(weights=None)
    if width != 64:
        net = scale_width(net, width)
        feat_dim = feat_dim * width // 64
    if stem in ("cifar", "stl"):
        net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    if stem == "cifar":
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, feat_dim
