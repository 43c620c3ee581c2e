"""A picture of a store: anchors (left column) beside their K candidates, for a quick look by eye."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def preview_indices(n: int, count: int) -> np.ndarray:
    """`count` anchors spread evenly over the split (the first, the last and between)."""
    return np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(np.int64))


def preview(store_path: str | Path, dataset, out: str | Path, count: int = 8, min_tile: int = 64) -> Path:
    """Write a PNG grid: one row per anchor, the real image first, then its K candidates; small images
    are enlarged (nearest neighbour) to at least `min_tile` pixels so that they can be seen."""
    from clsp.grids import candidates_grid, save_png
    from clsp.positives.store import PositivesStore

    store = PositivesStore.open(store_path, dataset)
    indices = preview_indices(store.n, count)
    anchors = dataset.images_at(indices)
    candidates = store.candidates(indices).numpy()
    factor = max(1, -(-min_tile // store.image_shape[0]))
    anchors = anchors.repeat(factor, axis=1).repeat(factor, axis=2)
    candidates = candidates.repeat(factor, axis=2).repeat(factor, axis=3)
    save_png(out, candidates_grid(anchors, candidates))
    return Path(out)
