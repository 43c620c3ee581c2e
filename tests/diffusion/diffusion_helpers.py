"""Helpers the diffusion tests import (a conftest cannot be imported unambiguously when the whole suite runs)."""

from __future__ import annotations

import torch


def perturbed_tiny_unet(image_size: int = 8, seed: int = 0, channels: int = 1):
    """The tiny preset with every parameter randomised: diffusers zero-initialises some output convs,
    which would make the up path ignore the bottleneck and hide interpolation bugs. Grey by default,
    as the digits the tests sample towards are."""
    from clsp.diffusion.unet import make_unet

    torch.manual_seed(seed)
    unet = make_unet("tiny", image_size, channels=channels)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet.eval()
