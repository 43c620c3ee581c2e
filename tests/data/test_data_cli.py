"""`clsp data info`, `clsp data preview` and `python -m clsp.data.fetch`: output, files, errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from dataset_writers import write_cifar10, write_image_folder
from PIL import Image

from clsp.cli import main


def test_info_of_a_folder(tmp_path, capsys):
    write_image_folder(tmp_path / "pics", {"cat": 2, "dog": 1})
    assert main(["data", "info", f"folder:{tmp_path / 'pics'}", "--split", "all"]) == 0
    out = capsys.readouterr().out
    assert "images       3 of 16x16x3 uint8 (in memory)" in out
    assert "classes      2: cat, dog" in out and "labels       yes" in out
    assert f"found in     {tmp_path / 'pics'}\n" in out
    # Its default split (train) is what a run trains on: one of the two cats is held out as split test.
    assert main(["data", "info", f"folder:{tmp_path / 'pics'}"]) == 0
    out = capsys.readouterr().out
    assert "images       2 of 16x16x3 uint8" in out
    assert "(split train: 2 of its 3 images; the test split is 20% of each class held out with seed 0" in out


def test_info_json_of_cifar10(tmp_path, capsys):
    write_cifar10(tmp_path)
    assert main(["data", "info", "cifar10", "--root", str(tmp_path), "--split", "test", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["count"] == 4 and facts["shape"] == [32, 32, 3] and facts["num_classes"] == 10
    assert facts["classes"][0] == "airplane" and facts["labels"] is True and len(facts["fingerprint"]) == 16


def test_info_of_fashion_mnist(fashion_mnist, capsys):
    assert main(["data", "info", "fashion-mnist"]) == 0
    out = capsys.readouterr().out
    assert "images       60000 of 32x32x1 uint8" in out and "classes      10: T-shirt/top" in out


def test_info_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["data", "info", "cifar10", "--root", str(tmp_path / "missing")]) == 2
    assert main(["data", "info", "nosuchset"]) == 2
    assert main(["data", "info", f"folder:{tmp_path}", "--split", "test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("clsp: error: ") for line in err)
    assert "missing" in err[0] and "unknown dataset 'nosuchset'" in err[1]


def test_cli_process_exit_code_and_message_for_a_missing_dataset():
    proc = subprocess.run([sys.executable, "-m", "clsp", "data", "info", "cifar10", "--root", "/nonexistent"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clsp: error: cifar10 not found") and "/nonexistent" in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_preview_writes_a_grid_of_originals_and_views(tmp_path, capsys):
    write_image_folder(tmp_path / "pics", {"a": 3, "b": 2})
    out = tmp_path / "out" / "preview.png"  # --out names the directory, as in every command
    args = ["data", "preview", f"folder:{tmp_path / 'pics'}", "--split", "all", "--aug", "simclr", "--out", str(out.parent),
            "--n", "3", "--views", "2", "--seed", "1"]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(out) as im:
        # 3 rows x (1 + 2) tiles of 16 px enlarged 6x to 96 px, 2 px padding
        assert im.size == (3 * 98 + 2, 3 * 98 + 2)
    assert sorted(p.name for p in out.parent.iterdir()) == ["preview.png"]  # no temporary left behind
    first = out.read_bytes()
    assert main(args) == 0 and out.read_bytes() == first  # a seed fixes images and views
    assert main(args[:-1] + ["2"]) == 0 and out.read_bytes() != first


def test_preview_of_a_grey_set_shows_grey_originals_beside_their_views(tmp_path):
    """digits is 1-channel: the originals' column must stack with the 3-channel views, and stay grey."""
    import numpy as np

    out = tmp_path / "pv"
    assert main(["data", "preview", "digits", "--aug", "simclr", "--out", str(out), "--n", "2", "--views", "1"]) == 0
    with Image.open(out / "preview.png") as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    first_tile = rgb[2:96, 2:96]
    assert first_tile.std() > 0 and (first_tile[..., 0] == first_tile[..., 1]).all()   # an image, grey


def test_preview_rejects_bad_counts(tmp_path, capsys):
    write_image_folder(tmp_path / "pics", {"a": 1})
    assert main(["data", "preview", f"folder:{tmp_path / 'pics'}", "--out", str(tmp_path / "v"), "--n", "0"]) == 2


def test_fetch_refuses_what_it_cannot_download(tmp_path):
    from clsp.data.fetch import main as fetch_main

    with pytest.raises(SystemExit, match="cannot download 'imagenet100'.*manual download"):
        fetch_main(["imagenet100", "--root", str(tmp_path / "target")])
    assert not (tmp_path / "target").exists()  # refused before touching the disk
