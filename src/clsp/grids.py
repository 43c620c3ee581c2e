"""Image grids of uint8 arrays, shared by the diffusion sampler, the positives stage and the report.

Everything takes uint8 (..., H, W, 3) or grey (..., H, W, 1) and returns uint8 (..., H, W, 3) numpy arrays (torch tensors are accepted), so a grid
can be written with `save_png` or embedded in a figure. The tiling itself is torchvision's make_grid.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from clsp.io import atomic_path, write_bytes_atomic

WHITE = 255


def image_grid(images, ncols: int, padding: int = 2, pad_value: int = WHITE) -> np.ndarray:
    """uint8 (N, H, W, 3) -> one uint8 image, N tiles in rows of `ncols`."""
    import torch
    from torchvision.utils import make_grid

    tiles = torch.as_tensor(_uint8(images)).permute(0, 3, 1, 2)
    grid = make_grid(tiles, nrow=ncols, padding=padding, pad_value=pad_value)
    return grid.permute(1, 2, 0).numpy()


def candidates_grid(anchors, candidates, padding: int = 2, gap: int = 6) -> np.ndarray:
    """One row per anchor: the anchor, a white gap, then its K candidates.

    anchors uint8 (N, H, W, 3), candidates uint8 (N, K, H, W, 3) -> uint8 image.
    """
    anchors, candidates = _uint8(anchors), _uint8(candidates)
    if candidates.ndim != 5 or anchors.shape[0] != candidates.shape[0] or anchors.shape[1:] != candidates.shape[2:]:
        raise ValueError(f"anchors {anchors.shape} and candidates {candidates.shape} do not match (N,H,W,3) / (N,K,H,W,3)")
    n, k = candidates.shape[:2]
    left = image_grid(anchors, ncols=1, padding=padding)
    right = image_grid(candidates.reshape(n * k, *candidates.shape[2:]), ncols=k, padding=padding)
    separator = np.full((left.shape[0], gap, 3), WHITE, dtype=np.uint8)
    return np.concatenate([left, separator, right], axis=1)


def upscale(image, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement, so that 8x8 or 32x32 tiles are visible in a report."""
    image = _uint8(image)
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


def w_sweep_image(anchors, sweep: Sequence[tuple[float, object]], tile_px: int = 48, title: str | None = None) -> np.ndarray:
    """The paper's w-ablation picture: one labelled row per w, each row the anchors and their candidates.

    anchors uint8 (N, H, W, 3); sweep [(w, candidates uint8 (N, K, H, W, 3)), ...] drawn with the same
    seed, so rows differ only by w. The first row shows the anchors themselves.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    anchors = _uint8(anchors)
    n, k = _uint8(sweep[0][1]).shape[:2]
    rows = [("anchors", image_grid(anchors, ncols=n))]
    rows += [(f"w = {w:g}", image_grid(np.swapaxes(_uint8(c), 0, 1).reshape(-1, *anchors.shape[1:]), ncols=n))
             for w, c in sweep]
    # Each w row holds K lines of N candidates: column i is anchor i's candidates, under the anchor.
    height_px = sum(r.shape[0] for _, r in rows)
    width_px = rows[0][1].shape[1]
    scale = tile_px / anchors.shape[1]
    dpi = 100
    figure_px = width_px * scale + 110
    if title:  # wrapped to the figure's width (at most 10 px a character at 12 pt), so that no line is cut off
        import textwrap

        title = textwrap.fill(title, max(12, int(figure_px / 10)))
    title_px = 10 + (30 + 22 * title.count("\n") if title else 0)
    fig = Figure(figsize=(figure_px / dpi, (height_px * scale + title_px) / dpi), dpi=dpi)
    grid = fig.add_gridspec(len(rows), 1, height_ratios=[r.shape[0] for _, r in rows], left=100 / figure_px,
                            right=0.99, top=1 - (title_px - 10 + 5 * (not title)) / (height_px * scale + title_px),
                            bottom=0.01, hspace=0.08)
    for i, (label, image) in enumerate(rows):
        ax = fig.add_subplot(grid[i])
        ax.imshow(image, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=11)
    if title:
        fig.suptitle(title, fontsize=12)
    return render(fig)


def render(fig) -> np.ndarray:
    """A matplotlib Figure as a uint8 (H, W, 3) array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write a matplotlib Figure atomically, in the format its suffix names (PNG by default)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png")
    return path


def save_png(path: str | os.PathLike, image) -> None:
    """Write a uint8 (H, W, 3) or (H, W) image as PNG, atomically."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(_uint8(image)).save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


def _uint8(array) -> np.ndarray:
    """A uint8 numpy array; grey images (..., H, W, 1) are drawn as RGB (..., H, W, 3)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {array.dtype}")
    if array.ndim >= 3 and array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array)
