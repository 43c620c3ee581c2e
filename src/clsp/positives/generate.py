"""`clsp.generate_positives`: K synthetic positives for a batch of images, in torchvision's conventions, from any
diffusers `UNet2DModel`, a clsp diffusion model directory or a model that ships with clsp (`clsp:NAME`).

It is the sampler that `clsp synthesize` runs (clsp.diffusion.sampler.generate_positives: the anchor's bottleneck
features mixed into each candidate's, h <- w h + (1 - w) h_anchor, at every denoising step), with the images
and candidates as a torch user holds them:

    images      (N, C, H, W): uint8 in [0, 255], or float in [0, 1] (what torchvision's ToTensor gives)
    candidates  (N, K, C, H, W): the same dtype and range as the images

and the sampler settings of a model directory's record (`recommended_sampler` in record.json: what makes the
shipped 16 px model's candidates keep their anchor's class) as defaults.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from clsp.diffusion.config import SamplerConfig
from clsp.errors import UserError

DDPM_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}


def generate_positives(model: Any, images: torch.Tensor, k: int = 8, w: float | None = None, *,
                       steps: int | None = None, sampler: str | None = None, layers: int | None = None,
                       seed: int = 0, device: str | torch.device | None = None, labels: torch.Tensor | None = None,
                       scheduler_config: dict | None = None, progress: bool = False, **settings: Any) -> torch.Tensor:
    """K synthetic positives of each image: candidates (N, K, C, H, W) on the CPU, in the images' dtype and range.

    Args:
        model: a diffusers `UNet2DModel` (unconditional, or class-conditional as `clsp diffusion train
            conditional=true` makes it), a diffusers pipeline holding one (`.unet`, `.scheduler`), a model
            directory (diffusers layout, as `clsp diffusion train` writes it), or `"clsp:fashion-mnist-16"`, the
            16 px grey model shipped with clsp. The UNet is moved to `device`.
        images: the anchors, (N, C, H, W), uint8 in [0, 255] or float in [0, 1]; C, H and W those the model makes.
        k: candidates per image.
        w: weight of each candidate's own bottleneck features, in [0, 1]: 1 = plain samples, lower = closer to
            the anchor. None: the model's recommended value (its record.json), else 0.1 (the paper's).
        steps, sampler, layers: denoising steps (default 100), sampler (ddim | ddpm | dpmsolver++ | unipc) and
            interpolated feature maps (1 = the mid block, the paper); None = the record's, else the defaults.
        seed: the candidates are a function of (images, settings, seed).
        device: where the UNet runs; None = CUDA when available, else the CPU.
        labels: (N,) int classes of the anchors, for a class-conditional model (ignored by an unconditional one).
        scheduler_config: the noise schedule a bare UNet was trained with; None = DDPM's linear schedule
            (1000 steps, beta 1e-4 .. 0.02). A model directory or pipeline brings its own.
        settings: any other sampler setting (`clsp.diffusion.config.SamplerConfig`: eta, guidance, start,
            share_anchor, batch_size, ...).

    Raises UserError (one line) for images of the wrong shape, dtype, range, size or channels and for unknown or
    out-of-range settings.
    """
    anchors = to_store_layout(images, "images")
    if not isinstance(k, int) or k < 1:
        raise UserError(f"k must be a positive number of candidates per image, got {k!r}")
    unet, scheduler_config, recommended = _resolve_model(model, scheduler_config)
    _check_matches(unet, anchors)
    given = {"w": w, "steps": steps, "sampler": sampler, "layers": layers, **settings}
    cfg = sampler_settings({**recommended, **{key: value for key, value in given.items() if value is not None}})
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    from clsp.diffusion import sampler as sampling

    candidates = sampling.generate_positives(unet, scheduler_config, anchors, k, cfg, seed=seed, device=device,
                                             progress=progress, anchor_labels=labels)
    return from_store_layout(candidates, images.dtype)


def sampler_settings(settings: dict) -> SamplerConfig:
    """A validated SamplerConfig from keyword settings; an unknown key is a UserError naming the known ones."""
    known = {f.name for f in dataclasses.fields(SamplerConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UserError(f"unknown sampler setting {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return SamplerConfig(**settings)


def to_store_layout(images: torch.Tensor, what: str = "images", dims: str = "N, C, H, W") -> torch.Tensor:
    """(..., C, H, W) uint8, or float in [0, 1] -> uint8 (..., H, W, C), the layout of the sampler and the store;
    `dims` names the axes the tensor must have."""
    if not torch.is_tensor(images):
        raise UserError(f"{what} must be a torch tensor ({dims}), got {type(images).__name__}")
    if images.ndim != len(dims.split(",")) or images.shape[-3] not in (1, 3) or 0 in images.shape:
        raise UserError(f"{what} must be ({dims}) with C = 1 or 3 (channels first, as torchvision has them), "
                        f"got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        pixels = images
    elif images.is_floating_point():
        low, high = float(images.min()), float(images.max())
        if low < 0.0 or high > 1.0:
            raise UserError(f"float {what} must be in [0, 1] (as torchvision's ToTensor gives them), got values in "
                            f"[{low:.3g}, {high:.3g}]; undo any normalisation first, or pass uint8 images")
        pixels = (images.float() * 255.0).round().to(torch.uint8)
    else:
        raise UserError(f"{what} must be uint8 in [0, 255] or float in [0, 1], got {images.dtype}")
    return pixels.detach().cpu().movedim(-3, -1).contiguous()


def from_store_layout(pixels: torch.Tensor, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """uint8 (..., H, W, C) -> (..., C, H, W) in `dtype`: uint8 as is, a float dtype in [0, 1]."""
    chw = pixels.movedim(-1, -3).contiguous()
    return chw if dtype == torch.uint8 else chw.to(dtype if dtype.is_floating_point else torch.float32) / 255.0


def _resolve_model(model: Any, scheduler_config: dict | None):
    """(UNet in eval mode, its noise schedule, the sampler settings its record recommends)."""
    from clsp.diffusion.model import load_model, recommended_sampler

    if isinstance(model, (str, os.PathLike)):
        unet, schedule = load_model(model)
        return unet, scheduler_config or schedule, recommended_sampler(model)
    if hasattr(model, "unet") and hasattr(model, "scheduler"):              # a diffusers DDPMPipeline
        return model.unet, scheduler_config or dict(model.scheduler.config), {}
    from diffusers import UNet2DModel

    if not isinstance(model, UNet2DModel):
        raise UserError(f"model must be a diffusers UNet2DModel, a pipeline holding one, a model directory or "
                        f"'clsp:NAME', got {type(model).__name__}")
    return model, scheduler_config or dict(DDPM_SCHEDULE), {}


def _check_matches(unet, anchors: torch.Tensor) -> None:
    height, width, channels = anchors.shape[1:]
    size = unet.config.sample_size
    sizes = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    if size is not None and sizes != (height, width):
        raise UserError(f"the diffusion model makes {sizes[0]}x{sizes[1]} images but the images are {height}x{width}; "
                        f"resize them (torchvision.transforms.Resize) or use a model trained at their size")
    if unet.config.in_channels != channels:
        raise UserError(f"the diffusion model makes {unet.config.in_channels}-channel images but the images have "
                        f"{channels}; convert them (torchvision.transforms.Grayscale(num_output_channels="
                        f"{unet.config.in_channels})) or use a model made for {channels} channels")
