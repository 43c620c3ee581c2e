"""Per-sample random augmentation of uint8 image batches on their own device, built on kornia.

Every sample in a batch draws its own crop, jitter, flip... parameters. Input: uint8 (B, H, W, C)
or (B, C, H, W) with C = 3, or 1 for grey data, on CPU or GPU; output: float32 (B, 3, size, size)
channels_last, normalised with the dataset's mean/std. A grey channel is repeated three times first:
the encoder is a standard RGB network, colour jitter leaves grey pixels grey, and grey data stays
one channel everywhere before this point (its diffusion model, its positives store). A recipe that
starts with a random resized crop takes its crop from the input at its own size (STL-10 in the
release: 64 px views cropped from the 96 px images); the others resize.

The random parameters are drawn from torch's global *CPU* generator whatever the images' device
(kornia's default, kept after `.to(device)`). A few numbers per sample cross to
the GPU; the pixels never leave it. In return a seed gives the same views on CPU and GPU, so a
resumed or moved run sees exactly the same augmentations (seed with `torch.manual_seed`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

RECIPES = ("simclr", "moco", "asymmetric", "flip", "eval")
# Recipes whose two views differ: (first view's recipe, second view's recipe); a third view takes the first's.
# solo-learn's asymmetric.yaml (its NNCLR and All4One recipes): solarisation on the second view only.
VIEW_RECIPES = {"asymmetric": ("asymmetric", "moco")}
BLUR_MIN_SIZE = 96  # blur hurts at 32x32 (SimCLR appendix B.9); the paper blurs only at >= 96 px


def blur_kernel_size(size: int) -> int:
    """SimCLR: a Gaussian kernel 10% of the image side, made odd (224 -> 23, 96 -> 9)."""
    return int(0.1 * size) // 2 * 2 + 1


def _random_resized_crop(size: int, min_scale: float = 0.08) -> nn.Module:
    """Crops resampled in one batched warp: kornia's default ("slice") loops over the samples in Python.
    The crop covers [min_scale, 1] of the image's area (SimCLR and the paper: 0.08; solo-learn's crop_min_scale)."""
    import kornia.augmentation as K

    return K.RandomResizedCrop((size, size), scale=(min_scale, 1.0), cropping_mode="resample")


def _kornia_ops(recipe: str, size: int, crop_min_scale: float = 0.08) -> list[nn.Module]:
    import kornia.augmentation as K

    blur = [K.RandomGaussianBlur(blur_kernel_size(size), (0.1, 2.0), p=0.5)] if size >= BLUR_MIN_SIZE else []
    if recipe == "simclr":
        return [
            _random_resized_crop(size, crop_min_scale),
            K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
            K.RandomGrayscale(p=0.2),
            K.RandomHorizontalFlip(),
            *blur,
        ]
    if recipe in ("moco", "asymmetric"):   # asymmetric: its first view, MoCo's recipe without solarisation
        solarize = [K.RandomSolarize(thresholds=0.0, additions=0.0, p=0.2)] if recipe == "moco" else []
        return [
            _random_resized_crop(size, crop_min_scale),
            K.ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8),
            K.RandomGrayscale(p=0.2),
            *blur,
            # thresholds=0 means a threshold of exactly 0.5 (kornia samples it from 0.5 +- 0), no brightness shift
            *solarize,
            K.RandomHorizontalFlip(),
        ]
    if recipe == "flip":
        return [K.RandomHorizontalFlip()]
    if recipe == "eval":
        return []
    raise ValueError(f"unknown augmentation recipe '{recipe}'; choose one of {', '.join(RECIPES)}")


class Augment(nn.Module):
    """uint8 batch -> augmented, resized, normalised float batch."""

    def __init__(self, recipe: str, size: int, mean: Sequence[float], std: Sequence[float],
                 crop_min_scale: float = 0.08) -> None:
        super().__init__()
        self.recipe, self.size = recipe, size
        # Deliberately not registered as a submodule: `.to(device)` moves the buffers below but leaves
        # kornia's samplers on their default, the CPU generator (see the module docstring).
        object.__setattr__(self, "ops", nn.Sequential(*_kornia_ops(recipe, size, crop_min_scale)))
        import kornia.augmentation as K

        self.crops = len(self.ops) > 0 and isinstance(self.ops[0], K.RandomResizedCrop)  # samples any side to `size`
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError(f"Augment expects a uint8 batch (B, H, W, C) or (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
        channels_last = images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3)
        x = images.permute(0, 3, 1, 2) if channels_last else images
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = x.float().div_(255.0)
        if not self.crops and (x.shape[-1] != self.size or x.shape[-2] != self.size):
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        if len(self.ops):
            x = self.ops(x)
        mean, std = self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype)
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


    def extra_repr(self) -> str:
        return f"recipe={self.recipe}, size={self.size}, ops={[type(op).__name__ for op in self.ops]}"


def make_augment(recipe: str, size: int, mean: Sequence[float], std: Sequence[float],
                 crop_min_scale: float = 0.08) -> Augment:
    return Augment(recipe, size, mean, std, crop_min_scale)


def make_view_augments(recipe: str, size: int, mean: Sequence[float], std: Sequence[float],
                       crop_min_scale: float = 0.08) -> tuple[Augment, Augment]:
    """The augmentations of a pair's first and second view: one module twice, unless the recipe is asymmetric."""
    if recipe not in VIEW_RECIPES:
        augment = make_augment(recipe, size, mean, std, crop_min_scale)
        return augment, augment
    first, second = VIEW_RECIPES[recipe]
    return make_augment(first, size, mean, std, crop_min_scale), make_augment(second, size, mean, std, crop_min_scale)
