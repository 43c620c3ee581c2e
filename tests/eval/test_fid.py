import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import torch

from clsp.eval.fid import PYTORCH_FID_FILE, feature_statistics, fid_eval, frechet_distance, generate_samples


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's matrix square root."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("shift", [0.0, 0.5, 3.0])
def test_frechet_distance_matches_scipy(shift):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(150, 6)) * np.linspace(0.5, 2, 6) + shift
    ours = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert ours == pytest.approx(scipy_fid(a, b), rel=1e-6, abs=1e-8)
    assert ours > 0


def test_frechet_distance_of_a_set_with_itself_is_zero():
    a = np.random.default_rng(1).normal(size=(100, 5))
    assert frechet_distance(*feature_statistics(a), *feature_statistics(a)) == pytest.approx(0.0, abs=1e-6)


def test_fid_without_weights_exits_2_naming_the_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "clsp", "fid", "--model", str(tmp_path / "model"), "--dataset", "digits"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert PYTORCH_FID_FILE in proc.stderr and "--inception-weights" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from clsp.diffusion.model import save_model
    from clsp.diffusion.schedulers import TRAINING_SCHEDULE
    from clsp.diffusion.unet import make_unet

    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("model") / "tiny", make_unet("tiny", 16, channels=1), TRAINING_SCHEDULE)


def test_samples_resume_chunk_by_chunk(tiny_model, tmp_path):
    from clsp.diffusion.model import load_model
    from clsp.diffusion.sampler import SamplerConfig

    unet, schedule = load_model(tiny_model)
    cfg = SamplerConfig(steps=2, w=1.0)
    first = generate_samples(unet, schedule, 10, cfg, 3, tmp_path / "s", 4, "cpu", progress=False)
    assert first.shape == (10, 16, 16, 1) and first.dtype == np.uint8
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [f"samples_0000{i}.npy" for i in range(3)]
    (tmp_path / "s" / "samples_00001.npy").unlink()  # as if killed before the second chunk landed
    np.testing.assert_array_equal(generate_samples(unet, schedule, 10, cfg, 3, tmp_path / "s", 4, "cpu", progress=False), first)
    assert not np.array_equal(first[:4], first[4:8])  # chunks have their own seeds


def test_fid_eval_end_to_end_with_stand_in_inception_weights(tiny_model, tmp_path, monkeypatch):
    """The real Inception architecture with random weights (the real file is not available offline)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    monkeypatch.setenv("CLSP_DATA_ROOT", str(tmp_path / "cache"))  # where the real-image statistics are cached
    with monkeypatch.context() as m:  # build the architecture without downloading, and save its random weights
        m.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: None)
        m.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        torch.manual_seed(0)
        weights = tmp_path / "inception.pth"
        torch.save(tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict(), weights)

    from clsp.data.config import DatasetConfig

    data = DatasetConfig(name="digits", size=16, subset=8)
    # dims=64: the first Inception block only (the full network at 299 px is too slow for a CPU test)
    metrics = fid_eval(tiny_model, data, tmp_path / "fid", n=6, inception_weights=weights, steps=2, batch_size=4,
                       device="cpu", dims=64, progress=False)
    assert metrics["kind"] == "fid" and metrics["results"]["n_samples"] == 6 and metrics["results"]["n_real"] == 8
    assert metrics["results"]["dims"] == 64
    assert np.isfinite(metrics["results"]["fid"]) and metrics["results"]["fid"] > 0
    assert len(list((tmp_path / "fid" / "samples").glob("samples_*.npy"))) == 2
    (stats,) = (tmp_path / "cache" / "fid-stats").glob("digits-train-*-64.npz")
    written = stats.stat().st_mtime_ns
    # another sample count: new samples, the cached real statistics, a consistent distance
    again = fid_eval(tiny_model, data, tmp_path / "fid-b", n=6, inception_weights=weights, steps=2, batch_size=3,
                     device="cpu", dims=64, progress=False)
    assert np.isfinite(again["results"]["fid"]) and again["results"]["fid"] != metrics["results"]["fid"]
    assert stats.stat().st_mtime_ns == written  # read, not recomputed

    from clsp.errors import UserError

    torch.save({"not": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(UserError, match="FID Inception"):
        fid_eval(tiny_model, data, tmp_path / "fid2", n=6, inception_weights=tmp_path / "wrong.pth", device="cpu", dims=64)


def test_the_inception_weights_are_read_once_and_tensors_only(tmp_path, monkeypatch):
    """torch-fidelity gets the tensors clsp checked: the user's file is read once, with weights_only=True."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    from clsp.eval.fid import load_inception

    with monkeypatch.context() as m:
        m.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: None)
        m.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        torch.manual_seed(0)
        weights = tmp_path / "inception.pth"
        saved = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["64"]).state_dict()
        torch.save(saved, weights)
    reads, real_load = [], torch.load

    def recording_load(f, *args, **kwargs):
        reads.append((str(f), kwargs.get("weights_only")))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    model = load_inception(weights, "cpu", dims=64)
    assert reads == [(str(weights), True)]
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)
    assert tfi.torch is torch                                       # the hand-over ends with the call
