"""`clsp eval knn|linear|transfer|embed|hardness|positives` and `clsp fid`: each a config dataclass and the call of
its library function. A new evaluation is one dataclass (on EncoderEval), one `config_command` block in
`register` and one small run function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from clsp.config import added, check, check_choice, check_device, check_given, check_positive, field
from clsp.data.config import DatasetConfig
from clsp.diffusion.config import SamplerConfig
from clsp.eval.config import EMBED_METHODS, TRANSFER_SETS, LinearProbeConfig, PositivesEvalConfig


@dataclass
class EncoderEval:
    """What every evaluation of an encoder needs."""

    ckpt: str = ""                               # encoder.safetensors written by `clsp pretrain`, or its run directory
    dataset: Optional[DatasetConfig] = None      # the labelled set to evaluate on (--dataset NAME)
    device: str = "auto"                         # auto | cpu | cuda | cuda:N
    out_dir: Optional[str] = None                # None: beside the encoder, under eval/<kind>/

    def __post_init__(self) -> None:
        check_given(bool(self.ckpt), "ckpt", "must name an encoder: --ckpt RUN_DIR/encoder.safetensors (or RUN_DIR)")
        check_device(self.device, "device")


def _needs_dataset(cfg: EncoderEval) -> None:
    check_given(cfg.dataset is not None, "dataset", "must name the labelled set to evaluate on (--dataset NAME)")


@dataclass
class KnnEval(EncoderEval):
    temperature: float = 0.07

    def __post_init__(self) -> None:
        super().__post_init__()
        _needs_dataset(self)
        check_positive(self.temperature, "temperature")


@dataclass
class LinearEval(EncoderEval):
    probe: LinearProbeConfig = field(LinearProbeConfig)  # the paper's protocol

    def __post_init__(self) -> None:
        super().__post_init__()
        _needs_dataset(self)


@dataclass
class TransferEval(EncoderEval):
    datasets: List[str] = field(lambda: list(TRANSFER_SETS))  # the downstream sets
    root: Optional[str] = None                   # where they are (None: the registry's search path)
    skip_missing: bool = False                   # report a set that is not on disk as missing and go on
    probe: LinearProbeConfig = field(LinearProbeConfig)


@dataclass
class EmbedEval(EncoderEval):
    n: int = 2000                                # test images to embed (a fixed random subset)
    method: str = added("tsne")                  # tsne | umap (umap-learn: pip install 'clsp[umap]')
    perplexity: float = 30.0                     # t-SNE's
    n_neighbors: int = added(15)                 # UMAP's neighbourhood size: larger keeps more global structure
    min_dist: float = added(0.1)                 # UMAP's closest spacing of embedded points
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _needs_dataset(self)
        check_positive(self.n, "n")
        check_choice(self.method, "method", EMBED_METHODS)
        check(self.n_neighbors >= 2, "n_neighbors", f"must be at least 2, got {self.n_neighbors}")
        check(0.0 <= self.min_dist, "min_dist", f"must be >= 0, got {self.min_dist}")


@dataclass
class HardnessEval(EncoderEval):
    positives: str = ""                          # the store `clsp synthesize` wrote
    n: int = 1000                                # anchors (a fixed random subset of the training split)
    augment: Optional[str] = None                # simclr | moco; None: the encoder's recipe
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _needs_dataset(self)
        check_given(bool(self.positives), "positives", "must name the positives store (--positives DIR)")
        check(self.augment in (None, "simclr", "moco"), "augment", f"must be simclr or moco, got {self.augment!r}")
        check_positive(self.n, "n")


@dataclass
class PositivesEval:
    """Judge a positives store (it needs no encoder): the store, the labelled set it was made from, the model."""

    positives: str = ""                          # the store `clsp synthesize` wrote
    dataset: Optional[DatasetConfig] = None      # the labelled set the store was made from (its train split)
    model: Optional[str] = None                  # the diffusion model that made it: needed for the w and layers sweeps
    settings: PositivesEvalConfig = field(PositivesEvalConfig)  # anchors, the sweeps, the reference classifier
    device: str = "auto"
    out_dir: str = ""

    def __post_init__(self) -> None:
        check_given(bool(self.positives), "positives", "must name the positives store (--positives DIR)")
        check_given(self.dataset is not None, "dataset", "must name the labelled set the store was made from (--dataset NAME)")
        check_given(bool(self.out_dir), "out_dir", "must name the output directory (--out DIR)")
        check(self.model is not None or not self.settings.sweeps, "model",
              "the w, layers, start and floor sweeps sample fresh candidates: give the diffusion model (--model DIR)")
        check_device(self.device, "device")


@dataclass
class FidEval:
    model: str = ""                              # diffusion model directory (diffusers layout)
    dataset: Optional[DatasetConfig] = None      # the model's training set (--dataset NAME)
    n: int = 50000                               # samples to generate
    inception_weights: Optional[str] = None      # pt_inception-2015-12-05-6726825d.pth (torch-fidelity's port)
    dims: int = 2048                             # Inception layer: 2048 (pool3, the standard FID), 768, 192, 64
    sampler: SamplerConfig = field(SamplerConfig)  # sampler, steps, eta, batch_size (samples per chunk and UNet call)
    seed: int = 0
    device: str = "auto"
    out_dir: Optional[str] = None                # None: beside the model, under eval/fid/

    def __post_init__(self) -> None:
        check_given(bool(self.model), "model", "must name a diffusion model directory (--model DIR)")
        check_given(self.dataset is not None, "dataset", "must name the model's training set (--dataset NAME)")
        check_device(self.device, "device")


ENCODER_FLAGS = {"--ckpt": ("ckpt", "encoder.safetensors written by `clsp pretrain`, or its run directory"),
                 "--dataset": ("dataset.name", "registry name (fashion-mnist, digits, cifar10, ...) or folder:PATH"),
                 "--size": ("dataset.size", "image side to load at (default: the encoder's input size)"),
                 "--subset": ("dataset.subset", "> 0: a fixed random subset of this many images per split"),
                 "--root": ("dataset.root", "where the dataset files are (default: the registry's search path)"),
                 "--device": ("device", "auto | cpu | cuda | cuda:N"),
                 "--out": ("out_dir", "output directory (default: beside the encoder, under eval/KIND/)")}

def register(subparsers) -> None:
    from clsp.cli import Flag, add_command, config_command, field_flags

    def flags(*tables: dict, **more: tuple[str, str]) -> dict:
        merged = {k: v if isinstance(v, Flag) else Flag(*v) for t in tables for k, v in t.items()}
        merged.update({"--" + k.replace("_", "-"): Flag(*v) for k, v in more.items()})
        return merged

    probe_flags = field_flags(LinearProbeConfig, "probe.")

    ckpt = "runs/demo/pretrain/simclr-clsp"
    ev = add_command(subparsers, "eval",
                     description="Evaluate a pretrained encoder; every command writes metrics.json and prints a table.")
    sub = ev.add_subparsers(dest="eval_command", metavar="KIND", required=True)

    p = sub.add_parser("knn", help="weighted kNN (cosine, T=0.07) for k in 5..200: best k and k=200")
    config_command(p, KnnEval, run_knn, flags=flags(ENCODER_FLAGS, temperature=("temperature", "kNN temperature")),
                   examples=[f"clsp eval knn --ckpt {ckpt} --dataset fashion-mnist"])

    p = sub.add_parser("linear", help="linear probe: SGD lr 1.0, 100 epochs, flip only; top-1 / top-5")
    config_command(p, LinearEval, run_linear, flags=flags(ENCODER_FLAGS, probe_flags),
                   examples=[f"clsp eval linear --ckpt {ckpt} --dataset fashion-mnist --epochs 100"])

    p = sub.add_parser("transfer", help="linear probe on downstream sets at the encoder's resolution")
    config_command(p, TransferEval, run_transfer, flags=flags(
        {k: v for k, v in ENCODER_FLAGS.items() if k not in ("--dataset", "--size", "--subset")}, probe_flags,
        datasets=("datasets", "comma-separated downstream sets"),
        skip_missing=("skip_missing", "report a set that is not on disk as missing and go on"),
        root=("root", "where the downstream sets are")),
        examples=[f"clsp eval transfer --ckpt {ckpt} --datasets cifar10,pets --skip-missing"])

    p = sub.add_parser("embed", help="t-SNE or UMAP of test features, coloured by class")
    config_command(p, EmbedEval, run_embed, flags=flags(
        ENCODER_FLAGS, n=("n", "test images to embed (a fixed random subset)"),
        method=("method", "tsne | umap (umap-learn: pip install 'clsp[umap]')"), perplexity=("perplexity", "t-SNE perplexity"),
        n_neighbors=("n_neighbors", "UMAP neighbourhood size"), min_dist=("min_dist", "UMAP minimum distance"),
        seed=("seed", "subset and embedding seed")),
        examples=[f"clsp eval embed --ckpt {ckpt} --dataset fashion-mnist --n 500"])

    p = sub.add_parser("hardness", help="cosine similarity of anchors to augmented, NN, synthetic and random positives")
    config_command(p, HardnessEval, run_hardness, flags=flags(
        ENCODER_FLAGS, positives=("positives", "the positives store directory written by `clsp synthesize`"),
        n=("n", "anchors (a fixed random subset of the training set)"),
        augment=("augment", "recipe of 'another augmentation of itself' (default: the encoder's)"), seed=("seed", "seed")),
        examples=[f"clsp eval hardness --ckpt {ckpt} --dataset fashion-mnist --size 16 --subset 1000 --positives runs/demo/positives"])

    p = sub.add_parser("positives", help="how good are the synthetic positives: class agreement, Frechet distance, "
                                         "pixels, diversity, hardness (a reference classifier's verdict), w, layers, "
                                         "start and floor sweeps, agreement against hardness per generator")
    config_command(p, PositivesEval, run_positives, flags=flags(
        {k: v for k, v in ENCODER_FLAGS.items() if k in ("--dataset", "--size", "--subset", "--root", "--device")},
        positives=("positives", "the positives store directory written by `clsp synthesize`"),
        model=("model", "the diffusion model that made the store (for --sweep-w / --sweep-layers)"),
        sweep_w=("settings.sweep_w", "w values to sample afresh and judge, e.g. 0,0.1,0.3,0.5,1"),
        sweep_layers=("settings.sweep_layers", "interpolation depths to sample afresh at the store's w, e.g. 1,4"),
        sweep_start=("settings.sweep_start", "partial-noise starts s to sample afresh, e.g. 1,0.7,0.5,0.3"),
        sweep_start_w=("settings.sweep_start_w", "the w of each start curve (default: the store's), e.g. 0.1,1"),
        sweep_floor=("settings.sweep_floor", "label-free similarity floors of the per-candidate start, e.g. 0.5,0.6"),
        n=("settings.n", "anchors whose stored candidates are judged"), sweep_n=("settings.sweep_n", "anchors per sweep value"),
        seed=("settings.seed", "anchor subset seed"), out=("out_dir", "output directory (metrics.json, positives.png, positives_tradeoff.png)")),
        examples=["clsp eval positives --positives runs/demo/positives --dataset fashion-mnist --size 16 --subset 1000 "
                  "--model clsp:fashion-mnist-16 --sweep-w 0,0.1,0.3,0.5,1 --sweep-layers 1,4 --out runs/demo-positives"])

    p = add_command(subparsers, "fid")
    config_command(p, FidEval, run_fid, flags=flags(
        {k: v for k, v in ENCODER_FLAGS.items() if k in ("--dataset", "--root", "--device")},
        field_flags(SamplerConfig, "sampler.", only=("sampler", "steps", "eta")),
        size=("dataset.size", "image side the training set is loaded at (must match the model)"),
        model=("model", "diffusion model directory (diffusers layout) from `clsp diffusion train`"),
        n=("n", "samples to generate"), inception_weights=("inception_weights", "torch-fidelity's FID Inception weights"),
        batch_size=("sampler.batch_size", "samples per chunk (a resumable unit) and per UNet call"),
        dims=("dims", "Inception layer: 2048, 768, 192, 64"), seed=("seed", "sampling seed"),
        out=("out_dir", "output directory (default: beside the model, under eval/fid/)")),
        examples=["clsp fid --model clsp:fashion-mnist-16 --dataset fashion-mnist --size 16 --n 10000 "
                  "--inception-weights pt_inception-2015-12-05-6726825d.pth"])


def _device(cfg):
    from clsp.config import torch_device_name

    return torch_device_name(cfg.device)


def run_knn(cfg: KnnEval) -> int:
    from clsp.eval.knn import knn_eval

    knn_eval(cfg.ckpt, cfg.dataset, cfg.out_dir, temperature=cfg.temperature, device=_device(cfg))
    return 0


def run_linear(cfg: LinearEval) -> int:
    from clsp.eval.linear import linear_eval

    linear_eval(cfg.ckpt, cfg.dataset, cfg.out_dir, cfg.probe, device=_device(cfg))
    return 0


def run_transfer(cfg: TransferEval) -> int:
    from clsp.eval.transfer import transfer_eval

    transfer_eval(cfg.ckpt, list(cfg.datasets), cfg.out_dir, root=cfg.root, probe_cfg=cfg.probe,
                  skip_missing=cfg.skip_missing, device=_device(cfg))
    return 0


def run_embed(cfg: EmbedEval) -> int:
    from clsp.eval.embed import embed_plot

    embed_plot(cfg.ckpt, cfg.dataset, cfg.out_dir, n=cfg.n, perplexity=cfg.perplexity, seed=cfg.seed, device=_device(cfg),
               method=cfg.method, n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist)
    return 0


def run_hardness(cfg: HardnessEval) -> int:
    from clsp.eval.hardness import hardness_eval

    hardness_eval(cfg.ckpt, cfg.dataset, cfg.positives, cfg.out_dir, n=cfg.n, augment=cfg.augment, seed=cfg.seed,
                  device=_device(cfg))
    return 0


def run_positives(cfg: PositivesEval) -> int:
    from clsp.eval.positives import positives_eval

    positives_eval(cfg.positives, cfg.dataset, cfg.out_dir, cfg.settings, model_dir=cfg.model)
    return 0


def run_fid(cfg: FidEval) -> int:
    from clsp.eval.fid import fid_eval

    s = cfg.sampler
    fid_eval(cfg.model, cfg.dataset, cfg.out_dir, n=cfg.n, inception_weights=cfg.inception_weights, sampler=s.sampler,
             steps=s.steps, eta=s.eta, batch_size=s.batch_size, seed=cfg.seed, device=_device(cfg), dims=cfg.dims)
    return 0
