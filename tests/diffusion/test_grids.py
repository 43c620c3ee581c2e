"""Image grids shared with the positives stage and the report."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clsp.grids import candidates_grid, image_grid, save_png, upscale, w_sweep_image


def tiles(n, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_image_grid_places_tiles_row_major():
    images = tiles(5)
    grid = image_grid(images, ncols=3, padding=2)
    assert grid.shape == (2 * 10 + 2, 3 * 10 + 2, 3) and grid.dtype == np.uint8
    assert np.array_equal(grid[2:10, 2:10], images[0])
    assert np.array_equal(grid[12:20, 12:20], images[4])                  # second row, second column


def test_candidates_grid_puts_each_anchor_beside_its_candidates():
    anchors, candidates = tiles(3, seed=1), tiles(12, seed=2).reshape(3, 4, 8, 8, 3)
    grid = candidates_grid(anchors, candidates, padding=2, gap=6)
    assert grid.shape == (3 * 10 + 2, (10 + 2) + 6 + (4 * 10 + 2), 3)
    row = 1
    assert np.array_equal(grid[12:20, 2:10], anchors[row])
    left = 12 + 6
    assert np.array_equal(grid[12:20, left + 2 + 3 * 10: left + 10 + 3 * 10], candidates[row, 3])
    with pytest.raises(ValueError):
        candidates_grid(anchors[:2], candidates)


def test_save_png_round_trips_and_w_sweep_renders(tmp_path):
    image = upscale(tiles(1)[0], 4)
    assert image.shape == (32, 32, 3)
    save_png(tmp_path / "a.png", image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), image)
    anchors = tiles(2)
    sweep = [(w, tiles(6, seed=i).reshape(2, 3, 8, 8, 3)) for i, w in enumerate([0.0, 0.1, 1.0])]
    picture = w_sweep_image(anchors, sweep, title="sweep")
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[0] > picture.shape[1]
    assert len({tuple(c) for c in picture.reshape(-1, 3)[::97]}) > 10      # images were drawn, not a blank figure
    assert list(tmp_path.iterdir()) == [tmp_path / "a.png"]                 # no temporary file left


def test_a_w_sweep_title_wider_than_its_grid_is_wrapped_not_cut_off():
    anchors = tiles(2)
    sweep = [(w, tiles(4, seed=i).reshape(2, 2, 8, 8, 3)) for i, w in enumerate([0.0, 1.0])]
    title = "interpolation weight w (ddim, 10 steps, layers 4, a long title)"
    picture = w_sweep_image(anchors, sweep, title=title)
    untitled = w_sweep_image(anchors, sweep)
    title_rows = picture[: picture.shape[0] - untitled.shape[0]]
    ink = (title_rows < 128).any(axis=2)
    columns = np.flatnonzero(ink.any(axis=0))
    assert columns.min() > 2 and columns.max() < picture.shape[1] - 3   # the title's text keeps off both edges
