"""`clsp positives preview`: each row is an anchor beside its K candidates."""

from __future__ import annotations

import numpy as np
from PIL import Image

from clsp.positives.preview import preview, preview_indices

from positives_helpers import planted_candidates, write_store


def test_preview_rows_show_each_anchor_then_its_candidates(tmp_path, digits_small):
    k = 3
    cands = planted_candidates(len(digits_small), k)
    write_store(tmp_path / "s", digits_small, cands)
    out = preview(tmp_path / "s", digits_small, tmp_path / "grid.png", count=4)

    grid = np.asarray(Image.open(out).convert("RGB"))
    rows = preview_indices(45, 4)
    assert rows.tolist() == [0, 15, 29, 44]
    tile, pad, gap = 64, 2, 6  # 8x8 enlarged 8x (at least 64 px, large enough to judge); grids.candidates_grid's padding and gap
    left = tile + 2 * pad
    assert grid.shape == (4 * (tile + pad) + pad, left + gap + k * (tile + pad) + pad, 3)

    def crop(r, x0):
        y = pad + r * (tile + pad)
        return grid[y:y + tile, x0:x0 + tile]

    def drawn(image):                                  # grey tiles are drawn as RGB, enlarged 8x
        return np.kron(image, np.ones((8, 8, 1), np.uint8)).repeat(3, axis=2)

    for r, index in enumerate(rows):
        assert np.array_equal(crop(r, pad), drawn(digits_small.images[index]))
        for c in range(k):
            assert np.array_equal(crop(r, left + gap + pad + c * (tile + pad)), drawn(cands[index, c]))
