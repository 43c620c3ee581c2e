"""Backbones as feature extractors: torchvision's ResNets with the stems the paper uses per image size, and any
timm model (`timm:NAME`, the optional extra `clsp[timm]`). Every forward returns pooled features (no classifier)."""

from __future__ import annotations

import difflib

from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock, ResNet

from clsp.errors import UserError

TIMM_PREFIX = "timm:"
INSTALL_TIMM = "pip install 'clsp[timm]'"


def resnet10(weights=None) -> ResNet:
    """ResNet-18's layout with one basic block per stage: a third of its cost, for CPU tests and demos.
    Kept by hand: torchvision has no such depth, and timm's resnet10t differs (deep stem, average-pool shortcuts)."""
    assert weights is None
    return ResNet(BasicBlock, [1, 1, 1, 1])


ARCHS = {"resnet18": (resnet18, 512), "resnet50": (resnet50, 2048), "resnet10": (resnet10, 512)}
STEMS = ("cifar", "stl", "imagenet")


def scale_width(net: ResNet, width: int) -> ResNet:
    """Rebuild `net`'s stem and stages `width / 64` times as wide (64, 128, 256, 512 -> width x 1, 2, 4, 8), with
    torchvision's layers and initialisation: torchvision fixes a basic block's widths, and a CPU study needs a
    ResNet-18 a quarter of the cost (width 32) more than a different network. Kept by hand: timm's ResNet takes
    `channels` but initialises otherwise (zero-init last BN) and is an optional extra; encoders saved rest on this."""
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


def make_backbone(arch: str = "resnet18", stem: str = "cifar", width: int = 64,
                  image_size: int | None = None) -> tuple[nn.Module, int]:
    """A randomly initialised backbone whose forward returns pooled features, and their dimension.

    arch: resnet18 | resnet50 | resnet10 (torchvision's layers, fc removed), or `timm:NAME` (see `timm_backbone`).
    stem `cifar`: 3x3 stride-1 first conv, no max-pool (32x32 images).
    stem `stl`: 3x3 stride-1 first conv, max-pool kept (64x64 images).
    stem `imagenet`: torchvision's 7x7 stride-2 conv and max-pool (224x224 images).
    width: channels of the first stage (64: torchvision's networks, unchanged); built-in ResNets only.
    image_size: the side of the images it will see; a timm model with a fixed input (a ViT) is built for it.
    """
    if stem not in STEMS:
        raise UserError(f"unknown stem '{stem}'; choose one of {', '.join(STEMS)}")
    if width < 8 or width % 8:
        raise UserError(f"backbone width must be a multiple of 8 (64: the standard ResNet), got {width}")
    if arch.startswith(TIMM_PREFIX):
        return timm_backbone(arch[len(TIMM_PREFIX):], stem, width, image_size)
    if arch not in ARCHS:
        raise UserError(f"unknown backbone '{arch}'; choose one of {', '.join(ARCHS)}, or timm:NAME for a timm model "
                        "(e.g. timm:resnet50, timm:vit_small_patch16_224)")
    build, feat_dim = ARCHS[arch]
    net = build(weights=None)
    if width != 64:
        net = scale_width(net, width)
        feat_dim = feat_dim * width // 64
    small_image_stem(net, stem)
    net.fc = nn.Identity()
    return net, feat_dim


def small_image_stem(net: nn.Module, stem: str) -> None:
    """The `cifar` / `stl` stems on a network laid out as torchvision's ResNet (`conv1`, `maxpool`), in place."""
    if stem in ("cifar", "stl"):
        net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    if stem == "cifar":
        net.maxpool = nn.Identity()


def import_timm():
    try:
        import timm
    except ImportError:
        raise UserError(f"backbone.arch=timm:NAME needs timm, which is not installed: {INSTALL_TIMM}") from None
    return timm


def timm_backbone(name: str, stem: str, width: int = 64, image_size: int | None = None) -> tuple[nn.Module, int]:
    """`timm.create_model(name, pretrained=False, num_classes=0)`: pooled features, of timm's `num_features`.

    A model timm declares of fixed input size (`fixed_input_size`: ViT, DeiT, Swin, ...) is built with
    img_size = `image_size`, so a 16 or 32 px set works with the name's own patch size (vit_small_patch16_224
    on 32 px images sees 2 x 2 patches: pick a smaller-patch name, e.g. timm:vit_small_patch8_224, for more
    tokens); the side must be a multiple of the patch. Its patch embedding is its stem: `stem` is not used,
    as solo-learn gives its ViTs only img_size.
    A CNN is built as timm defines it. `stem` cifar / stl then changes it as for the built-in ResNets, as
    solo-learn does to its ResNets on CIFAR: only where the network is laid out as torchvision's ResNet
    (timm's resnet18, resnet50, ...: a 7x7 `conv1` and a `maxpool`); another CNN takes stem imagenet only.
    """
    timm = import_timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.8)
        hint = (f"did you mean {' or '.join('timm:' + c for c in close)}?" if close else
                "list them with: python -c \"import timm; print(timm.list_models('*vit*'))\"")
        raise UserError(f"unknown timm model '{name}' (backbone.arch=timm:{name}); {hint}")
    if width != 64:
        raise UserError(f"backbone.width={width} scales the built-in ResNets only; timm:{name} has the widths its name "
                        "says: leave backbone.width at 64")
    pretrained_cfg = timm.models.get_pretrained_cfg(name)
    fixed = bool(getattr(pretrained_cfg, "fixed_input_size", False))
    kwargs = {"img_size": image_size} if fixed and image_size is not None else {}
    try:
        net = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        raise UserError(f"timm cannot build {name} for {image_size} px images ({e}); choose another model or "
                        "dataset.size") from None
    patch_embed = getattr(net, "patch_embed", None)
    if fixed and patch_embed is not None and image_size is not None:
        patch = tuple(patch_embed.patch_size)[0]
        if image_size % patch:
            raise UserError(f"timm:{name} cuts images into {patch} px patches and these are {image_size} px: set "
                            f"dataset.size to a multiple of {patch}, or choose a ViT with smaller patches")
    if not fixed and stem != "imagenet":
        first = getattr(net, "conv1", None)
        if not (isinstance(first, nn.Conv2d) and first.kernel_size == (7, 7) and hasattr(net, "maxpool")):
            raise UserError(f"backbone.stem={stem} replaces a ResNet's 7x7 first conv, and timm:{name} has none; "
                            "use backbone.stem=imagenet (timm's own stem)")
        small_image_stem(net, stem)
    return net, int(net.num_features)


def backbone_record(arch: str) -> dict:
    """What an encoder file records besides arch, stem, width and image size to rebuild `arch` exactly:
    the timm version for a timm model (its layer names and shapes are timm's), nothing for the built-ins."""
    return {"timm_version": import_timm().__version__} if arch.startswith(TIMM_PREFIX) else {}
