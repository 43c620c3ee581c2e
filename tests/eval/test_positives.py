"""`clsp eval positives`: the reference classifier, and each measure checked against an outcome it must give.

Stand-in stores whose candidates are known (the anchors themselves, shuffled images, noise) say what a
perfect, a useless and a broken generator score; the arithmetic is checked by hand on small arrays.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from clsp.data.config import DatasetConfig
from clsp.eval.positives import (PositivesEvalConfig, _Judge, agreement, evaluate_positives, frechet,
                                 mean_pairwise_distance, pixel_shares)
from clsp.eval.reference import ReferenceConfig, reference_classifier


class PlantedStore:
    """The part of PositivesStore that the evaluation reads: K given candidates per training image."""

    def __init__(self, candidates: np.ndarray, w: float = 0.1) -> None:
        self.array = candidates
        self.manifest = {"generation": {"sampler": {"w": w}, "k": candidates.shape[1]}}

    def candidates(self, indices):
        return self.array[np.asarray(indices)]


@pytest.fixture(scope="module")
def digits_reference(digits16_train, digits16_test, tmp_path_factory):
    import os

    os.environ["CLSP_DATA_ROOT"] = str(tmp_path_factory.mktemp("cache"))   # a cache of this module's own
    try:
        return reference_classifier(digits16_train, digits16_test, ReferenceConfig(epochs=8, seed=0))
    finally:
        os.environ.pop("CLSP_DATA_ROOT")


def test_reference_classifier_beats_chance_on_fashion_mnist_by_a_wide_margin(fashion_mnist, tmp_path, monkeypatch):
    from clsp.data.config import load_split

    monkeypatch.setenv("CLSP_DATA_ROOT", str(tmp_path))
    data = DatasetConfig(name="fashion-mnist", size=16)
    train, test = load_split(data, "train"), load_split(data, "test").subset(np.arange(2000))
    small = ReferenceConfig(width=16, epochs=3, max_train=6000, batch_size=64)       # ~77% in seconds; the default ~87%
    reference = reference_classifier(train, test, small)
    assert reference.test_accuracy > 70.0, reference.record                # chance: 10%
    cached = reference_classifier(train, test, small)
    assert cached.record == reference.record                                # the second call reads the cache
    assert (tmp_path / "reference").is_dir()


def test_real_test_images_agree_as_often_as_the_classifier_is_right(digits_reference, digits16_test):
    """Candidates that are the anchors' own images (anchors taken from the test split) agree exactly as often as
    the reference classifier was found right on that split when it was trained."""
    store = PlantedStore(digits16_test.images[:, None])
    results = evaluate_positives(store, digits16_test, digits16_test, PositivesEvalConfig(n=len(digits16_test), real_n=200),
                                 reference=digits_reference)
    assert results["store"]["agreement"] == pytest.approx(digits_reference.test_accuracy)
    assert results["ceiling"] == pytest.approx(digits_reference.test_accuracy)
    assert digits_reference.test_accuracy > 80.0                                         # chance: 10%


def test_anchors_as_candidates_reach_the_ceiling_and_shuffled_ones_fall_to_chance(digits_reference, digits16_train,
                                                                                digits16_test):
    cfg = PositivesEvalConfig(n=400, real_n=400)
    perfect = evaluate_positives(PlantedStore(np.repeat(digits16_train.images[:, None], 2, axis=1)), digits16_train,
                                 digits16_test, cfg, reference=digits_reference)
    assert perfect["store"]["agreement"] >= perfect["ceiling"] - 3.0
    assert perfect["store"]["diversity"] == pytest.approx(0.0, abs=1e-6)               # K identical copies
    order = np.random.default_rng(1).permutation(len(digits16_train))
    shuffled = evaluate_positives(PlantedStore(digits16_train.images[order][:, None]), digits16_train, digits16_test,
                                  cfg, reference=digits_reference)
    assert abs(shuffled["store"]["agreement"] - shuffled["chance"]) < 6.0               # 400 draws: 1 SE ~ 1.5
    s = shuffled["store"]["similarity"]
    assert s["synthetic"] == pytest.approx(s["random_real"], abs=0.05)                  # a shuffled image is a random one
    assert s["nearest_real"] > s["synthetic"]


def test_frechet_distance_of_two_real_halves_is_far_below_that_of_noise(digits_reference, digits16_train):
    images = digits16_train.images
    half = len(images) // 2
    real = frechet(digits_reference.raw_features(images[:half]), digits_reference.raw_features(images[half:]))
    noise = np.random.default_rng(0).integers(0, 256, images[:half].shape, dtype=np.uint8)
    fake = frechet(digits_reference.raw_features(noise), digits_reference.raw_features(images[half:]))
    assert fake > 20 * real


def test_pixel_shares_and_measures_by_hand():
    grey = np.zeros((2, 2, 2, 1), np.uint8)
    grey[0] = 255                                              # one white image, one black: both flat
    shares = pixel_shares(grey)
    assert shares == {"at_0": 50.0, "at_255": 50.0, "near_0": 50.0, "near_255": 50.0, "constant": 100.0,
                      "channel_spread": 0.0, "n": 2}
    levels = np.array([0, 3, 4, 5, 250, 251, 254, 255], np.uint8).reshape(1, 2, 4, 1)   # 8 pixels, by hand:
    near = pixel_shares(levels)                                # <= 4: 0, 3, 4; >= 251: 251, 254, 255
    assert (near["at_0"], near["near_0"], near["at_255"], near["near_255"]) == (12.5, 37.5, 12.5, 37.5)
    rgb = np.zeros((1, 1, 2, 3), np.uint8)
    rgb[0, 0, 0] = (0, 30, 60)                                 # |0-30|, |30-60|, |0-60| -> 40 on one pixel of two
    assert pixel_shares(rgb)["channel_spread"] == pytest.approx(20.0)
    assert agreement(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0])) == 50.0
    orthogonal = np.eye(3)[None]                               # 3 candidates, pairwise cosine 0
    assert mean_pairwise_distance(orthogonal) == pytest.approx(1.0)


def test_judge_refuses_nothing_and_counts_the_anchors(digits_reference, digits16_train, digits16_test):
    judge = _Judge(digits_reference, digits16_train, digits16_test, PositivesEvalConfig(real_n=100))
    idx = np.arange(10)
    out = judge.judge(idx, np.repeat(digits16_train.images[idx][:, None], 3, axis=1), seed=0)
    assert (out["n_anchors"], out["k"]) == (10, 3) and len(out["agreement_per_class"]) == 10


def test_cli_on_a_real_store_writes_metrics_and_a_sweep_figure(tmp_path, monkeypatch, capsys):
    """`clsp synthesize` a small store of digits with a tiny model, then `clsp eval positives` with a w sweep."""
    import torch

    from clsp.cli import main
    from clsp.diffusion.model import save_model
    from clsp.diffusion.schedulers import TRAINING_SCHEDULE
    from clsp.diffusion.unet import make_unet

    monkeypatch.setenv("CLSP_DATA_ROOT", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = save_model(tmp_path / "model", make_unet("tiny", 8, channels=1), dict(TRAINING_SCHEDULE))
    common = ["--dataset", "digits", "--subset", "40"]
    assert main(["synthesize", "--model", str(model), *common, "--k", "2", "--out", str(tmp_path / "store"),
                 "sampler.steps=2", "chunk_size=20", "--device", "cpu"]) == 0
    assert main(["eval", "positives", "--positives", str(tmp_path / "store"), *common, "--model", str(model),
                 "--sweep-w", "0,1", "--sweep-layers", "1,3", "--sweep-start", "1,0.5", "--sweep-start-w", "0.1,1",
                 "--sweep-floor", "0.4,0.9", "--n", "20", "--sweep-n", "6", "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    r = metrics["results"]
    assert metrics["kind"] == "positives" and [row["w"] for row in r["sweep"]] == [0.0, 1.0]
    assert [row["layers"] for row in r["layers_sweep"]] == [1, 3] and r["layers_sweep"][0]["n_anchors"] == 6
    assert [(row["w"], row["start"]) for row in r["start_sweep"]] == [(0.1, 1.0), (0.1, 0.5), (1.0, 1.0), (1.0, 0.5)]
    floors = r["floor_sweep"]
    assert [row["floor"] for row in floors] == [0.4, 0.9] and floors[0]["grid"] == [1.0, 0.5]
    assert set(floors[0]["strength"]["start_share"]) <= {"1", "0.5"}
    assert floors[0]["strength"]["start_mean"] >= floors[1]["strength"]["start_mean"]   # a higher floor, smaller starts
    assert r["store"]["strength"]["n"] == 40 and r["store"]["strength"]["start_share"] == {"1": 1.0}
    marks = r["store"]["marks"]
    assert 0 <= marks["two_augmentations"]["agreement"] <= 100 and -1 <= marks["nearest_real"]["similarity"] <= 1
    assert (tmp_path / "eval" / "positives.png").is_file() and (tmp_path / "eval" / "positives_tradeoff.png").is_file()
    out = capsys.readouterr().out
    assert "class agreement" in out and "w sweep" in out and "layers sweep" in out
    assert "start sweep" in out and "floor sweep" in out and "two augmentations" in out
    assert main(["eval", "positives", "--positives", str(tmp_path / "store"), *common, "--sweep-w", "0.5",
                 "--out", str(tmp_path / "x")]) == 2                                      # a sweep needs the model
