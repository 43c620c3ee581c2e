"""FID of plain (uninterpolated) diffusion samples against the training set.

    FID = |mu_s - mu_r|^2 + Tr(S_s + S_r - 2 (S_s S_r)^(1/2))

over Inception-v3 pool3 (2048-d) features of the samples (s) and the real training images (r), as
in the reference implementation (TTUR) and the paper's numbers (50k DDPM samples vs the training
set). The features come from torch-fidelity's port of the TensorFlow FID Inception (its bilinear
resize to 299 mimics TF 1.x), loaded from a local weights file: no registry here carries it.
Samples are generated in chunks written atomically under out/samples/, each with its own seed, so an
interrupted run resumes with the chunks it has and produces the same samples. The training set's
statistics are cached in the data cache (CLSP_DATA_ROOT/fid-stats/), keyed by its fingerprint, the
weights file and the layer.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import torch

from clsp.errors import UserError

TORCH_FIDELITY_FILE = "weights-inception-2015-12-05-6726825d.pth"
TORCH_FIDELITY_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{TORCH_FIDELITY_FILE}"
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{PYTORCH_FID_FILE}"
WEIGHTS_HELP = (f"FID needs the TF-FID Inception-v3 weights as a PyTorch file: {PYTORCH_FID_FILE} ({PYTORCH_FID_URL}) "
                f"or torch-fidelity's {TORCH_FIDELITY_FILE} ({TORCH_FIDELITY_URL}), both ports of the 2015-12-05 "
                "TensorFlow Inception used by the reference FID code; download one where there is a network and "
                "pass its path with --inception-weights")


# -- the arithmetic --------------------------------------------------------------------------------

def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, d) features, in float64."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Frechet distance between two Gaussians, by torch-fidelity (Tr sqrt(S1 S2) from eigenvalues)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    stat = lambda mu, sigma: {"mu": np.asarray(mu, np.float64), "sigma": np.atleast_2d(np.asarray(sigma, np.float64))}  # noqa: E731
    return float(fid_statistics_to_metric(stat(mu1, sigma1), stat(mu2, sigma2), verbose=False)[KEY_METRIC_FID])


# -- the Inception features ------------------------------------------------------------------------

INCEPTION_DIMS = (64, 192, 768, 2048)  # the layers torch-fidelity (and pytorch-fid's --dims) offer; 2048 = pool3, the standard


def load_inception(weights_path, device, dims: int = 2048):
    """torch-fidelity's FID Inception with local weights; a UserError naming the file when it is absent or wrong."""
    if weights_path is None or not Path(weights_path).is_file():
        where = f" ({weights_path} does not exist)" if weights_path is not None else ""
        raise UserError(WEIGHTS_HELP + where)
    try:  # only tensors, read once: torch-fidelity gets these (its own torch.load would unpickle anything)
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to replace
        raise UserError(f"{weights_path} is not a PyTorch state dict of tensors ({str(e).splitlines()[0]}); {WEIGHTS_HELP}") from None
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    try:
        with _handed_over(tfi, state):
            model = tfi.FeatureExtractorInceptionV3("inception-v3-compat", [str(dims)],
                                                    feature_extractor_weights_path=str(weights_path))
    except (RuntimeError, KeyError, AttributeError) as e:
        raise UserError(f"{weights_path} does not hold the FID Inception's weights ({str(e).splitlines()[0]}); {WEIGHTS_HELP}") from None
    return model.to(device).eval()


@contextlib.contextmanager
def _handed_over(module, state: dict):
    """Within the block, `module`'s `torch.load(...)` returns the checked `state` instead of reading a file."""

    class TorchWithState:
        def load(self, *args, **kwargs):
            return state

        def __getattr__(self, name):
            return getattr(torch, name)

    module.torch = TorchWithState()
    try:
        yield
    finally:
        module.torch = torch


@torch.no_grad()
def inception_features(model, images, batch_size: int = 200, device=None, progress: bool = True) -> np.ndarray:
    """(N, dims) Inception features (pool3 by default) of uint8 NHWC images (an array, a tensor or an ImageSet / StreamingImageSet)."""
    from clsp.features import default_device, image_batches

    device = default_device(device)
    batches = image_batches(images, batch_size, device)
    if progress and len(images) > batch_size:  # no bar for a one-batch loop
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=-(-len(images) // batch_size), desc="inception", unit="batch", leave=False)
    # uint8 NCHW in; a grey channel is repeated, as the reference FID code does for grey images
    feats = [model(batch.permute(0, 3, 1, 2).expand(-1, 3, -1, -1).contiguous())[0].float() for batch in batches]
    return torch.cat(feats).cpu().numpy()


def real_statistics(inception, train, weights_hash: str, dims: int, device, progress: bool = True):
    """(mu, sigma) of the training images' features, cached in the data cache by (data, weights, layer):
    every model trained on the same images is compared against the same statistics, computed once."""
    from clsp.data.sets import cache_dir
    from clsp.io import atomic_path

    path = cache_dir() / "fid-stats" / f"{train.name}-{train.split}-{train.fingerprint}-{weights_hash}-{dims}.npz"
    if path.is_file():
        with np.load(path) as cached:
            return cached["mu"], cached["sigma"]
    mu, sigma = feature_statistics(inception_features(inception, train, device=device, progress=progress))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma)
    return mu, sigma


# -- samples, in resumable chunks ------------------------------------------------------------------

def generate_samples(unet, scheduler_config: dict, n: int, sampler_cfg, seed: int, chunk_dir: Path, chunk_size: int,
                     device=None, progress: bool = True) -> np.ndarray:
    """n plain samples, uint8 (n, H, W, 3); chunk i (seed derived from (seed, i)) is kept in chunk_dir."""
    from clsp.diffusion.sampler import sample
    from clsp.features import default_device
    from clsp.io import atomic_path
    from clsp.training import step_seed

    device = default_device(device)
    chunk_dir.mkdir(parents=True, exist_ok=True)
    chunks = range(math.ceil(n / chunk_size))
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="sampling", unit="chunk")
    out = []
    for i in chunks:
        m = min(chunk_size, n - i * chunk_size)
        path = chunk_dir / f"samples_{i:05d}.npy"
        images = _read_chunk(path, m)
        if images is None:
            images = sample(unet, scheduler_config, m, sampler_cfg, step_seed(seed, i, stream="fid"), device).numpy()
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, images)
        out.append(images)
    return np.concatenate(out)


def _read_chunk(path: Path, m: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        images = np.load(path)
    except (OSError, ValueError):
        return None
    return images if images.dtype == np.uint8 and len(images) == m else None


# -- the evaluation --------------------------------------------------------------------------------

def fid_eval(model_dir, dataset_cfg, out_dir=None, n: int = 50000, inception_weights=None, sampler: str = "ddim",
             steps: int = 100, eta: float | None = None, batch_size: int = 500, seed: int = 0, device=None,
             dims: int = 2048, progress: bool = True) -> dict:
    """FID of n plain samples of the model against its training split; writes metrics.json into out_dir.

    `dims` other than 2048 (pool3) gives the FID of an earlier Inception layer, as pytorch-fid's --dims:
    not comparable with published FIDs, but cheap (the tests use 64).
    """
    from clsp.config import to_dict
    from clsp.data.config import load_split
    from clsp.diffusion.model import check_model_matches, load_model
    from clsp.diffusion.sampler import SamplerConfig
    from clsp.features import default_device
    from clsp.eval.metrics import dataset_record, run_evaluation
    from clsp.io import hash_directory

    if n < 2:
        raise UserError(f"--n must be at least 2 for a covariance, got {n}")
    if dims not in INCEPTION_DIMS:
        raise UserError(f"--dims must be one of {', '.join(map(str, INCEPTION_DIMS))}, got {dims}")
    device = default_device(device)
    inception = load_inception(inception_weights, device, dims)  # checked before any sampling
    sampler_cfg = SamplerConfig(sampler=sampler, steps=steps, w=1.0, batch_size=batch_size,
                                **({} if eta is None else {"eta": eta}))
    unet, scheduler_config = load_model(model_dir)
    train = load_split(dataset_cfg, dataset_cfg.train_split)
    check_model_matches(unet, int(train.shape[0]), int(train.shape[2]))
    model_dir = Path(model_dir).resolve()
    out = Path(out_dir) if out_dir is not None else model_dir.parent / "eval" / "fid"
    config = {"kind": "fid", "model": str(model_dir), "dataset": to_dict(dataset_cfg), "n": n, "seed": seed, "dims": dims,
              "sampler": to_dict(sampler_cfg), "chunk_size": batch_size}
    inputs = {"model": hash_directory(model_dir), "train": train.fingerprint,
              "inception": _file_hash(inception_weights)}

    def compute() -> dict:
        samples = generate_samples(unet.to(device), scheduler_config, n, sampler_cfg, seed, out / "samples", batch_size,
                                   device, progress)
        fake = feature_statistics(inception_features(inception, samples, device=device, progress=progress))
        real = real_statistics(inception, train, inputs["inception"], dims, device, progress)
        return {"fid": frechet_distance(*fake, *real), "n_samples": n, "n_real": len(train),
                "sampler": to_dict(sampler_cfg), "seed": seed, "dims": dims,
                "features": f"torch-fidelity inception-v3-compat, layer {dims}" + (" (pool3)" if dims == 2048 else "")}

    model = {"path": str(model_dir), "fingerprint": inputs["model"]}
    return run_evaluation(out, "fid", config, inputs, compute, fid_table, None, dataset_record(train), model=model)


def fid_table(results: dict) -> str:
    from clsp.eval.metrics import format_table

    sampler = results["sampler"]
    return format_table(["FID", "value"], [["FID", results["fid"]], ["Inception layer", results["dims"]],
                                           ["samples", results["n_samples"]], ["real images", results["n_real"]],
                                           ["sampler", f"{sampler['sampler']}, {sampler['steps']} steps"]])


def _file_hash(path) -> str:
    from clsp.io import file_sha256

    return file_sha256(path)[:16]


fid = fid_eval  # the stage function's name in docs/ARCHITECTURE.md
