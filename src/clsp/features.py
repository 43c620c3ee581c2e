"""Frozen-backbone features of a whole image set: the input of every probe (kNN, linear, t-SNE, hardness),
and of pretraining's online monitor, so it sits below both `clsp.methods` and `clsp.eval`.

The backbone runs in eval mode (BatchNorm uses its running statistics, so a sample's features do
not depend on its batch) under no_grad, batch by batch, on the GPU when there is one (bf16 autocast,
channels_last inputs). Images are normalised with the eval recipe of `clsp.data.augment`: resize to
the encoder's side, scale to [0, 1], subtract mean and divide by std; no other transformation.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from clsp.data.augment import make_augment


def default_device(device: str | torch.device | None = None) -> torch.device:
    """The device to compute on: the one asked for, else the GPU when there is one."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def image_batches(images, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """uint8 NHWC batches, in order, from an array, a tensor, or an ImageSource (clsp.data.sets)."""
    if hasattr(images, "batches"):
        for batch, _ in images.batches(batch_size, shuffle=False, device=device):
            yield batch
        return
    tensor = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    for start in range(0, len(tensor), batch_size):
        yield tensor[start:start + batch_size].to(device, non_blocking=True)


@torch.no_grad()
def extract_features(backbone: nn.Module, images, mean: Sequence[float], std: Sequence[float], size: int,
                     batch_size: int = 512, device: str | torch.device | None = None, flip: bool = False,
                     progress: bool = False, recipe: str = "eval") -> torch.Tensor:
    """float32 (N, d) features of uint8 NHWC `images`; `flip=True` mirrors every image first.

    `recipe` names the `clsp.data.augment` recipe applied before the backbone: "eval" (normalise
    only) for probes; a training recipe ("simclr", "moco") draws random views from torch's RNG.

    The features stay on the device they were computed on (the probes that follow run there too):
    `device`, else the backbone's own accelerator, else the GPU when there is one. The backbone is
    moved there and put in eval mode; its train/eval mode is restored after, so a monitor may call
    this in the middle of training.
    """
    param = next(backbone.parameters(), None)
    if device is None and param is not None and param.device.type != "cpu":
        device = param.device  # a DDP rank's own GPU, not cuda:0
    device = default_device(device)
    was_training = backbone.training
    backbone.to(device).eval()
    normalise = make_augment(recipe, size, mean, std).to(device)
    on_gpu = device.type == "cuda"
    batches = image_batches(images, batch_size, device)
    if progress and len(images) > batch_size:  # no bar for a one-batch loop
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=-(-len(images) // batch_size), desc="features", unit="batch", leave=False)
    feats = []
    try:
        for batch in batches:
            if batch.dtype != torch.uint8:
                raise TypeError(f"extract_features expects uint8 images, got {batch.dtype}")
            if flip:  # NHWC: width is dim 2
                batch = batch.flip(2)
            x = normalise(batch)  # float NCHW, channels_last
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
                feats.append(backbone(x).float())
    finally:
        backbone.train(was_training)
    if not feats:
        raise ValueError("extract_features got an empty image set")
    return torch.cat(feats)
