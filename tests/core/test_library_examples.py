"""The library examples run on micro data (24 Fashion-MNIST images in an ImageFolder, the shipped 16 px diffusion
model, two denoising steps): examples/own_dataset.py from the folder to positives and an encoder through the API
alone, and examples/lightly_simclr_clsp.py, lightly's plain SimCLR loop (examples/lightly_simclr.py, which runs
too) plus the CLSP term in at most 10 added lines."""

from __future__ import annotations

import difflib
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import clsp
from clsp.errors import UserError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Fashion-MNIST test images as grey PNGs, 8 in each of three class folders, as a user's folder would hold them."""
    from PIL import Image

    try:
        ds = clsp.load_dataset("fashion-mnist", "test", download=False)
    except UserError as e:
        pytest.skip(f"Fashion-MNIST unavailable: {e}")
    root = tmp_path_factory.mktemp("folder") / "images"
    for label in (0, 1, 7):
        (root / ds.classes[label].replace("/", "-")).mkdir(parents=True)
        for n, i in enumerate(np.flatnonzero(ds.labels == label)[:8]):
            Image.fromarray(ds.images[i, :, :, 0]).save(root / ds.classes[label].replace("/", "-") / f"{n:03d}.png")
    return root


def test_own_dataset_goes_from_a_folder_to_positives_and_an_encoder(image_folder, tmp_path):
    run = example("own_dataset").main(["--data", str(image_folder), "--out", str(tmp_path / "run"), "--k", "2",
                                       "--steps", "2", "--epochs", "1", "--batch-size", "8"])
    assert run["steps"] == 3 and np.isfinite(run["losses"]).all()
    store = clsp.PositivesStore.open(run["store"])
    assert len(store) == 24 and store.k == 2 and store.image_shape == (16, 16, 1)
    state = torch.load(run["encoder"], weights_only=True)
    assert state["conv1.weight"].shape == (64, 3, 3, 3) and "fc.weight" not in state

    # The store refuses the folder once its order changes (a class renamed to sort first): one line, exit 2.
    last = sorted(image_folder.iterdir())[-1]
    moved = last.rename(image_folder / "0-first")
    try:
        rerun = subprocess.run([sys.executable, str(EXAMPLES / "own_dataset.py"), "--data", str(image_folder),
                                "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    finally:
        moved.rename(last)
    assert rerun.returncode == 2 and len(rerun.stderr.strip().splitlines()) == 1, rerun.stderr
    assert "another order" in rerun.stderr and "0-first/000.png" in rerun.stderr


def test_the_lightly_example_is_the_plain_loop_plus_at_most_ten_lines():
    plain = (EXAMPLES / "lightly_simclr.py").read_text().splitlines()
    with_clsp = (EXAMPLES / "lightly_simclr_clsp.py").read_text().splitlines()
    diff = list(difflib.unified_diff(plain, with_clsp, lineterm="", n=0))
    added = [line for line in diff if line.startswith("+") and not line.startswith("+++")]
    removed = [line for line in diff if line.startswith("-") and not line.startswith("---")]
    assert 0 < len(added) <= 10, "\n".join(added)
    assert len(removed) <= 4, "\n".join(removed)
    assert any("clsp.CLSPTerm" in line for line in added) and any("PositivesStore.open" in line for line in added)


def test_the_lightly_examples_train_on_a_folder_and_its_synthesized_store(image_folder, tmp_path):
    from clsp.data.config import DatasetConfig
    from clsp.diffusion.config import SamplerConfig
    from clsp.positives.config import SynthesizeConfig
    from clsp.positives.synthesize import synthesize

    # the store as the README makes it: clsp synthesize --model clsp:fashion-mnist-16 --dataset folder:DIR --split all
    synthesize(SynthesizeConfig(model="clsp:fashion-mnist-16", dataset=DatasetConfig(name=f"folder:{image_folder}", size=16),
                                split="all", k=2, sampler=SamplerConfig(steps=2), out_dir=str(tmp_path / "store"),
                                device="cpu", progress=False))
    common = ["--data", str(image_folder), "--size", "16", "--epochs", "1", "--batch-size", "8"]
    plain = example("lightly_simclr").main([*common, "--out", str(tmp_path / "plain.pt")])
    with_clsp = example("lightly_simclr_clsp").main([*common, "--out", str(tmp_path / "clsp.pt"),
                                                     "--positives", str(tmp_path / "store")])
    assert np.isfinite(plain).all() and np.isfinite(with_clsp).all()
    assert (tmp_path / "plain.pt").is_file() and (tmp_path / "clsp.pt").is_file()
    # The store refuses the folder without a class, or with a class renamed to sort first (the labels' sequence and the
    # items' random views cannot tell that; the files the store recorded do).
    positives = ["--out", str(tmp_path / "x.pt"), "--positives", str(tmp_path / "store")]
    last = sorted(image_folder.iterdir())[-1]
    for away, message in [(tmp_path / "hidden", "holds the positives of 24 images but the dataset has 16"),
                          (image_folder / "0-first", "has the file 0-first/000.png, not the store's")]:
        last.rename(away)
        try:
            with pytest.raises(UserError, match=message):
                example("lightly_simclr_clsp").main([*common, *positives])
        finally:
            away.rename(last)
