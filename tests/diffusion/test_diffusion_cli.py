"""`clsp diffusion sample`: the files it writes, w = 1 through the CLI, and its user errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clsp.cli import main


def run(*args) -> int:
    return main(["diffusion", "sample", *map(str, args)])


def test_w1_through_the_cli_equals_plain_sampling(tmp_path, saved_tiny_model):
    common = ["--model", saved_tiny_model, "--steps", 3, "--seed", 11, "--device", "cpu"]
    for sampler in ("ddim", "dpmsolver++"):
        assert run(*common, "--sampler", sampler, "--out", tmp_path / f"plain-{sampler}", "--n", 6) == 0
        assert run(*common, "--sampler", sampler, "--out", tmp_path / f"w1-{sampler}", "--n", 3, "--k", 2,
                   "--anchors", "digits", "--w", 1) == 0
        plain, w1 = np.load(tmp_path / f"plain-{sampler}" / "samples.npy"), np.load(tmp_path / f"w1-{sampler}" / "samples.npy")
        assert plain.shape == (6, 1, 8, 8, 1) and w1.shape == (3, 2, 8, 8, 1) and w1.dtype == np.uint8
        assert np.array_equal(plain.reshape(6, 8, 8, 1), w1.reshape(6, 8, 8, 1))
        grid = np.asarray(Image.open(tmp_path / f"w1-{sampler}" / "samples.png"))
        assert grid.shape[0] > grid.shape[1] / 3                          # 3 rows of anchor + 2 candidates


def test_sweep_w_rows_differ_only_by_w(tmp_path, saved_tiny_model):
    assert run("--model", saved_tiny_model, "--steps", 3, "--out", tmp_path / "sweep", "--n", 2, "--k", 2,
               "--anchors", "digits", "--sweep-w", "0,0.5,1", "--device", "cpu") == 0
    sweep = np.load(tmp_path / "sweep" / "samples.npy")
    assert sweep.shape == (3, 2, 2, 8, 8, 1)
    assert run("--model", saved_tiny_model, "--steps", 3, "--out", tmp_path / "plain", "--n", 4, "--device", "cpu") == 0
    assert np.array_equal(sweep[2].reshape(4, 8, 8, 1), np.load(tmp_path / "plain" / "samples.npy").reshape(4, 8, 8, 1))
    assert not np.array_equal(sweep[0], sweep[2])
    assert (tmp_path / "sweep" / "samples.png").is_file()


@pytest.mark.parametrize("args,message", [
    (["--anchors", "digits", "--size", "16"], "makes 8x8 images but the data is 16x16"),
    (["--sweep-w", "0,0.1"], "--sweep-w interpolates towards anchors"),
    (["--sampler", "euler"], "sampler"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, saved_tiny_model, capsys, args, message):
    assert run("--model", saved_tiny_model, "--out", tmp_path / "x", "--steps", 2, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clsp: error:") and message in err[0]
    assert not (tmp_path / "x").exists()


def test_missing_model_directory_is_named(tmp_path, capsys):
    assert run("--model", tmp_path / "nope", "--out", tmp_path / "x") == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err
