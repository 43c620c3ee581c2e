"""`clsp diffusion train` and `clsp diffusion sample`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from clsp.config import check, check_device, check_given, check_positive, field
from clsp.data.config import DatasetConfig
from clsp.diffusion.config import SamplerConfig
from clsp.errors import UserError


@dataclass
class SampleConfig:
    """`clsp diffusion sample`: plain samples, or K interpolated candidates per anchor image."""

    model: str = ""                                  # a diffusers model directory (unet/ + scheduler/)
    n: int = 16                                      # samples, or anchors (the first n of the split)
    anchors: Optional[DatasetConfig] = None          # interpolate towards these images (None: plain sampling)
    split: str = "train"                             # the anchors' split
    k: int = 8                                       # candidates per anchor
    sampler: SamplerConfig = field(SamplerConfig)    # sampler, steps, eta, w, ...
    sweep_w: List[float] = field(list)               # several w values: one row block per w (needs anchors)
    seed: int = 0
    device: str = "auto"
    out_dir: str = ""                                # writes OUT_DIR/samples.png and OUT_DIR/samples.npy

    def __post_init__(self) -> None:
        check_given(bool(self.model), "model", "must name a diffusion model directory (--model DIR)")
        check_given(bool(self.out_dir), "out_dir", "must name the directory to write into (--out DIR)")
        check_positive(self.n, "n")
        check_positive(self.k, "k")
        check(all(0.0 <= w <= 1.0 for w in self.sweep_w), "sweep_w", f"values must lie in [0, 1], got {self.sweep_w}")
        check(not self.sweep_w or self.anchors is not None, "sweep_w",
              "--sweep-w interpolates towards anchors: give --anchors DATASET")
        check_device(self.device, "device")


def register(subparsers) -> None:
    from clsp.cli import TRAINING_FLAGS, Flag, add_command, config_command, field_flags, model_sampler
    from clsp.diffusion.config import DiffusionTrainConfig

    parser = add_command(subparsers, "diffusion")
    actions = parser.add_subparsers(dest="diffusion_command", metavar="ACTION", required=True)

    train = actions.add_parser("train", help="train a DDPM, unconditional or class-conditional (conditional=true); "
                                             "resumes from OUT_DIR/checkpoints/last.ckpt",
                               description="Presets: configs/diffusion/*.yaml (tiny-digits, demo, fashion-mnist-16, "
                                           "fashion-mnist, cifar10, cifar100, stl10, and *-conditional).")
    config_command(train, DiffusionTrainConfig, _train, presets="diffusion",
                   flags=TRAINING_FLAGS,
                   examples=["clsp diffusion train --config tiny-digits max_steps=20 --out runs/diffusion-digits",
                             "clsp diffusion train --config cifar10 trainer.devices=4 max_steps=100000"])

    sample = actions.add_parser(
        "sample", help="plain samples, or K interpolated candidates per anchor image",
        description="Writes OUT_DIR/samples.png (a grid: anchors beside their candidates) and OUT_DIR/samples.npy "
                    "(uint8 N x K x H x W x C; K = 1 for plain samples; with --sweep-w, one more leading axis for w).")
    config_command(sample, SampleConfig, _sample, defaults=model_sampler("sampler", "model"), flags={
        "--model": Flag("model", "a diffusers model directory (unet/ + scheduler/, or flat as google/ddpm-cifar10-32: "
                                 "config.json, weights, scheduler_config.json), or clsp:NAME for a model clsp ships"),
        "--out": Flag("out_dir", "the directory to write samples.png and samples.npy into"),
        "--n": Flag("n", "samples, or anchors (the first N of the split) with --anchors"),
        "--anchors": Flag("anchors.name", "interpolate towards these images (a dataset name or folder:PATH)"),
        "--split": Flag("split", "the anchors' split"),
        "--size": Flag("anchors.size", "resize the anchors to this side (must match the model)"),
        "--k": Flag("k", "candidates per anchor"),
        "--sweep-w": Flag("sweep_w", "comma-separated w values, e.g. 0,0.1,0.3,0.5,1: the w-ablation picture"),
        "--seed": Flag("seed", "the sampling seed"),
        "--device": Flag("device", "auto | cpu | cuda | cuda:N"),
        **field_flags(SamplerConfig, "sampler."),
    }, examples=["clsp diffusion sample --model runs/diffusion/model --n 16 --out runs/samples",
                 "clsp diffusion sample --model /models/ddpm-cifar10-32 --anchors cifar10 --w 0.1 --k 8 --out runs/grid",
                 "clsp diffusion sample --model runs/diffusion/model --anchors fashion-mnist --sweep-w 0,0.1,0.3,0.5,1 "
                 "--out runs/sweep"])


def resolve_train_preset(name: str) -> str:
    """`--config cifar10` means configs/diffusion/cifar10.yaml (not the pipeline's configs/cifar10.yaml)."""
    from clsp.config import resolve_preset

    return str(resolve_preset(name, "diffusion"))


def _train(cfg) -> int:
    from clsp.diffusion.train import train_diffusion

    print(train_diffusion(cfg))
    return 0


def _sample(cfg: SampleConfig) -> int:
    import dataclasses

    import numpy as np
    import torch

    from clsp.config import torch_device_name
    from clsp.diffusion.model import check_model_matches, load_model
    from clsp.diffusion.sampler import generate_positives, sample
    from clsp.grids import candidates_grid, image_grid, save_png, upscale, w_sweep_image
    from clsp.io import atomic_path

    unet, scheduler_config = load_model(cfg.model)
    device = torch_device_name(cfg.device) or ("cuda" if torch.cuda.is_available() else "cpu")
    s = cfg.sampler
    if cfg.anchors is None:
        images = sample(unet, scheduler_config, cfg.n, s, cfg.seed, device, progress=True)
        array = images.numpy()[:, None]
        picture = image_grid(images, ncols=math.ceil(math.sqrt(cfg.n)))
    else:
        anchors = _load_anchors(cfg.anchors, cfg.split, cfg.n)
        check_model_matches(unet, anchors.shape[1], anchors.shape[3], size_key="anchors.size / --size")
        if cfg.sweep_w:
            rows = [(w, generate_positives(unet, scheduler_config, anchors, cfg.k, dataclasses.replace(s, w=w),
                                           cfg.seed, device, progress=True)) for w in cfg.sweep_w]
            array = np.stack([c.numpy() for _, c in rows])
            picture = w_sweep_image(anchors, rows, title=f"{s.sampler} {s.steps} steps, seed {cfg.seed}")
        else:
            candidates = generate_positives(unet, scheduler_config, anchors, cfg.k, s, cfg.seed, device, progress=True)
            array = candidates.numpy()
            picture = candidates_grid(anchors, candidates)
    if not cfg.sweep_w:
        picture = upscale(picture, max(1, 64 // array.shape[-2]))
    out = Path(cfg.out_dir)
    with atomic_path(out / "samples.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, array)
    save_png(out / "samples.png", picture)
    print(f"{out / 'samples.png'}\n{out / 'samples.npy'}  uint8 {tuple(array.shape)}")
    return 0


def _load_anchors(dataset: DatasetConfig, split: str, n: int):
    """The first n images of a split as uint8 (n, H, W, C)."""
    import numpy as np
    import torch

    from clsp.data.config import load_split

    data = load_split(dataset, split)
    return torch.from_numpy(data.images_at(np.arange(min(n, len(data)))))
