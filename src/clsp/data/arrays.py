"""uint8 image-array helpers the loaders share: grey arrays, zero padding, antialiased resizing."""

from __future__ import annotations

import numpy as np

from clsp.errors import UserError


def to_grey_uint8(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> (N, H, W, 1): grey data keeps one channel."""
    if images.ndim == 3:
        images = images[..., None]
    return np.ascontiguousarray(images.astype(np.uint8, copy=False))


def pad_to(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (N, H, W, C) symmetrically to size x size (Fashion-MNIST 28 -> 32)."""
    n, h, w, c = images.shape
    if h > size or w > size:
        raise UserError(f"cannot pad images of {h}x{w} to {size}x{size}; choose size >= {max(h, w)}")
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((n, size, size, c), dtype=images.dtype)
    out[:, top:top + h, left:left + w] = images
    return out


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize (N, H, W, C) uint8 to size x size with antialiased bilinear interpolation."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    import torch
    import torch.nn.functional as F

    out = []
    for start in range(0, len(images), 4096):
        x = torch.as_tensor(np.array(images[start:start + 4096])).permute(0, 3, 1, 2).float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.ascontiguousarray(np.concatenate(out))
