"""Per-sample random augmentation of uint8 image batches on their own device, built on kornia.

Every sample in a batch draws its own crop, jitter, flip... parameters. Input: uint8 (B, H, W, 3)
or (B, 3, H, W) on CPU or GPU; output: float32 (B, 3, size, size), normalised with the dataset's
mean/std. Randomness comes from torch's global RNG on the tensor's device, so a seed fixes the views.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

RECIPES = ("simclr", "moco", "flip", "eval")


def _kornia_ops(recipe: str, size: int) -> list[nn.Module]:
    import kornia.augmentation as K

    if recipe == "simclr":
        ops = [
            K.RandomResizedCrop((size, size), scale=(0.08, 1.0)),
            K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
            K.RandomGrayscale(p=0.2),
            K.RandomHorizontalFlip(),
        ]
        if size >= 96:  # blur is harmful at 32x32 (SimCLR appendix); the paper uses it only at >= 96 px
            ops.append(K.RandomGaussianBlur((size // 10) * 2 + 1, (0.1, 2.0), p=0.5))
        return ops
    if recipe == "moco":
        ops = [
            K.RandomResizedCrop((size, size), scale=(0.08, 1.0)),
            K.ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8),
            K.RandomGrayscale(p=0.2),
        ]
        if size >= 96:
            ops.append(K.RandomGaussianBlur((size // 10) * 2 + 1, (0.1, 2.0), p=0.5))
        ops += [K.RandomSolarize(thresholds=0.0, additions=0.0, p=0.2), K.RandomHorizontalFlip()]
        return ops
    if recipe == "flip":
        return [K.RandomHorizontalFlip()]
    if recipe == "eval":
        return []
    raise ValueError(f"unknown augmentation recipe '{recipe}'; choose one of {', '.join(RECIPES)}")


class Augment(nn.Module):
    """uint8 batch -> augmented, resized, normalised float batch."""

    def __init__(self, recipe: str, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.recipe, self.size = recipe, size
        self.ops = nn.Sequential(*_kornia_ops(recipe, size))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"Augment expects uint8 images, got {images.dtype}")
        x = images.permute(0, 3, 1, 2) if images.shape[-1] == 3 and images.shape[1] != 3 else images
        x = x.float().div_(255.0)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        if len(self.ops):
            x = self.ops(x)
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def make_augment(recipe: str, size: int, mean: Sequence[float], std: Sequence[float]) -> Augment:
    return Augment(recipe, size, mean, std)
