import numpy as np
import pytest
import torch
from torch import nn

from clsp.data.config import DatasetConfig
from clsp.features import extract_features
from clsp.eval.hardness import KINDS, hardness_eval, hardness_similarities


class PixelEncoder:
    """An identity-like encoder: its features are the normalised pixels themselves."""

    size, mean, std = 16, (0.3,) * 3, (0.4,) * 3

    def features(self, images, flip=False, batch_size=512, progress=True, recipe="eval"):
        return extract_features(nn.Flatten(), images, self.mean, self.std, self.size, batch_size, "cpu", flip,
                                recipe=recipe)


class NoisyCopies:
    """A stand-in positives store (the interface of PositivesStore.candidates): K noisy copies of each image."""

    def __init__(self, images: np.ndarray, k: int, noise: float) -> None:
        self.images, self.k, self.noise = images, k, noise

    def candidates(self, indices):
        base = torch.from_numpy(self.images[np.asarray(indices)]).float()[:, None].repeat(1, self.k, 1, 1, 1)
        noisy = base + self.noise * torch.randn(base.shape, generator=torch.Generator().manual_seed(0))
        return noisy.round().clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def small_train(digits16_train):
    return digits16_train.subset(np.arange(200))


def test_four_distributions_with_sane_ordering(small_train):
    anchors = np.arange(0, 200, 5)
    sims = hardness_similarities(PixelEncoder(), small_train, NoisyCopies(small_train.images, 3, 25.0), anchors,
                                 progress=False)
    assert set(sims) == set(KINDS)
    assert sims["synthetic"].shape == (40, 3) and all(sims[k].shape == (40,) for k in ("augmented", "nn", "random"))
    for values in sims.values():
        assert np.all(values <= 1.0 + 1e-5) and np.all(values >= -1.0 - 1e-5)
    # the nearest neighbour is the most similar other image: never below a random other image
    assert np.all(sims["nn"] >= sims["random"] - 1e-6)
    assert sims["nn"].max() < 0.9999  # the anchor itself is excluded
    # noisy copies of the anchor are closer than a random image, and than the NN for most anchors
    assert sims["synthetic"].mean() > sims["random"].mean()
    assert np.mean(sims["synthetic"].mean(1) > sims["nn"]) > 0.5
    # exact copies are identical in embedding
    exact = hardness_similarities(PixelEncoder(), small_train, NoisyCopies(small_train.images, 2, 0.0), anchors,
                                  progress=False)
    np.testing.assert_allclose(exact["synthetic"], 1.0, atol=1e-5)
    np.testing.assert_array_equal(exact["random"], sims["random"])  # seeded: same draws


def test_nn_matches_brute_force(small_train):
    anchors = np.array([0, 17, 199])
    sims = hardness_similarities(PixelEncoder(), small_train, NoisyCopies(small_train.images, 1, 0.0), anchors,
                                 progress=False)
    feats = torch.nn.functional.normalize(PixelEncoder().features(small_train.images), dim=1)
    for i, a in enumerate(anchors):
        others = [j for j in range(200) if j != a]
        assert sims["nn"][i] == pytest.approx(float((feats[others] @ feats[a]).max()), abs=1e-5)


def test_hardness_eval_with_a_real_store(encoder_file, tmp_path):
    from clsp.data.config import load_split
    from clsp.eval.metrics import read_metrics
    from clsp.positives.store import StoreWriter, chunk_bounds, dataset_record, new_manifest

    data = DatasetConfig(name="digits", size=16, subset=64)
    train = load_split(data, "train")
    k, chunk = 2, 32
    rng = np.random.default_rng(0)
    cands = np.clip(train.images[:, None].astype(int) + rng.integers(-30, 30, (64, k, 16, 16, 1)), 0, 255).astype(np.uint8)
    generation = {"k": k, "seed": 0, "chunk_size": chunk, "sampler": {"sampler": "test"}}
    writer = StoreWriter(tmp_path / "store", new_manifest(dataset_record(train), "hash", generation, {}, {}))
    writer.start()
    for i in writer.my_chunks():
        start, stop = chunk_bounds(i, len(train), chunk)
        writer.write_chunk(i, cands[start:stop])
    writer.finish()

    metrics = hardness_eval(encoder_file, data, tmp_path / "store", tmp_path / "hardness", n=16, device="cpu")
    assert metrics == read_metrics(tmp_path / "hardness") and metrics["kind"] == "hardness"
    res = metrics["results"]
    assert set(res["similarity"]) == set(KINDS) and res["n_anchors"] == 16 and res["k"] == k
    assert res["similarity"]["synthetic"]["n"] == 16 * k
    for s in res["similarity"].values():
        assert s["q25"] <= s["median"] <= s["q75"] and s["min"] <= s["mean"] <= s["max"]
    assert (tmp_path / "hardness" / "hardness.png").stat().st_size > 1000
    # a store made from other images is refused with a message
    from clsp.errors import UserError

    with pytest.raises(UserError, match="positives store"):
        hardness_eval(encoder_file, DatasetConfig(name="digits", size=16, subset=65), tmp_path / "store",
                      tmp_path / "h2", n=16, device="cpu")

    # no anchors is a clean error (it was a traceback), and nothing is written
    from clsp.cli import main

    argv = ["eval", "hardness", "--ckpt", str(encoder_file), "--dataset", "digits", "--size", "16", "--subset", "64",
            "--positives", str(tmp_path / "store"), "--out", str(tmp_path / "h0"), "--device", "cpu"]
    assert main([*argv, "--n", "0"]) == 2
    assert not (tmp_path / "h0").exists()
