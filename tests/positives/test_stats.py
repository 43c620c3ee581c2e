"""`clsp positives stats`: size on disk, per-slot pixel statistics, planted degenerate images found."""

from __future__ import annotations

import json

import numpy as np

from clsp.cli import main
from clsp.positives import PositivesStore
from clsp.positives.stats import STATS, constant_mask, store_stats

from positives_helpers import planted_candidates, write_store


def test_stats_find_planted_constant_images_and_match_numpy(tmp_path, digits_small):
    cands = planted_candidates(45, 3)
    cands[5, 1] = 0          # all black (what a NaN-born sample becomes)
    cands[20, 0] = 77        # constant grey
    cands[44, 2] = 255       # all white, in the last (short) chunk
    cands[30, 1] = 9         # almost, but not, constant
    cands[30, 1, 3, 3, 0] = 10
    write_store(tmp_path / "s", digits_small, cands, chunk_size=8)

    stats = store_stats(PositivesStore.open(tmp_path / "s"))
    d = stats["degenerate"]
    assert (d["images"], d["constant"], d["all_black"], d["all_white"]) == (135, 3, 1, 1)
    assert sorted((x["index"], x["slot"], x["value"]) for x in d["first"]) == [(5, 1, 0), (20, 0, 77), (44, 2, 255)]
    assert [s["constant"] for s in stats["slots"]] == [1, 1, 1]
    for s in range(3):
        slot = cands[:, s].astype(np.float64)
        assert np.isclose(stats["slots"][s]["mean"], slot.mean(), atol=1e-4)
        assert np.isclose(stats["slots"][s]["std"], slot.std(), atol=1e-4)
        assert (stats["slots"][s]["min"], stats["slots"][s]["max"]) == (int(slot.min()), int(slot.max()))
    on_disk = sum(p.stat().st_size for p in (tmp_path / "s").iterdir())
    assert stats["bytes_on_disk"] == on_disk and on_disk > cands.nbytes


def test_constant_mask_is_zero_variance_over_all_channels():
    images = np.full((2, 4, 4, 3), 7, np.uint8)
    images[1, 0, 0, 2] = 8
    assert constant_mask(images).tolist() == [True, False]


def test_stats_command_prints_and_writes_json(tmp_path, digits_small, capsys):
    cands = planted_candidates(45, 2)
    cands[3, 0] = 0
    write_store(tmp_path / "s", digits_small, cands)
    assert main(["positives", "stats", str(tmp_path / "s")]) == 0
    printed = capsys.readouterr().out
    assert "degenerate (constant) images: 1 of 90" in printed and "all black 1" in printed
    assert main(["positives", "stats", str(tmp_path / "s"), "--json"]) == 0  # the same facts as JSON, as `data info --json`
    beside = json.loads((tmp_path / "s" / STATS).read_text())
    assert beside == json.loads(capsys.readouterr().out)
    assert beside["degenerate"]["constant"] == 1


def test_stats_of_a_missing_store_is_a_user_error(tmp_path, capsys):
    assert main(["positives", "stats", str(tmp_path / "nothing")]) == 2
    assert "not a positives store" in capsys.readouterr().err
