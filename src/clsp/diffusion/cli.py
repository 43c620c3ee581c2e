"""`clsp diffusion train` and `clsp diffusion sample`."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from clsp.errors import UserError


def register(subparsers) -> None:
    from clsp.cli import add_config_arguments

    parser = subparsers.add_parser("diffusion", help="train a DDPM; sample plain or CLSP-interpolated images")
    actions = parser.add_subparsers(dest="diffusion_command", metavar="ACTION", required=True)

    train = actions.add_parser("train", help="train an unconditional DDPM (resumes from OUT_DIR/checkpoints/last.ckpt)",
                               description="Presets: configs/diffusion/*.yaml (tiny-digits, demo, fashion-mnist, cifar10, "
                                           "cifar100, stl10), e.g. --config cifar10 trainer.devices=4 max_steps=100000")
    add_config_arguments(train)
    train.set_defaults(func=_train)

    s = actions.add_parser("sample", help="plain samples, or K interpolated candidates per anchor image",
                           description="Writes OUT.png (a grid: anchors beside their candidates) and OUT.npy "
                                       "(uint8 N x K x H x W x C; K = 1 for plain samples; with --sweep-w, one more "
                                       "leading axis for w).")
    s.add_argument("--model", required=True, help="a diffusers model directory (unet/ + scheduler/, or flat as "
                   "google/ddpm-cifar10-32: config.json, weights, scheduler_config.json)")
    s.add_argument("--out", required=True, help="output path stem: OUT.png and OUT.npy are written")
    s.add_argument("--n", type=int, default=16, help="samples, or anchors (the first N of the split) with --anchors")
    s.add_argument("--anchors", metavar="DATASET", help="interpolate towards these images (a dataset name or folder:PATH)")
    s.add_argument("--split", default="train")
    s.add_argument("--size", type=int, help="resize the anchors' dataset to this side (must match the model)")
    s.add_argument("--k", type=int, default=8, help="candidates per anchor")
    s.add_argument("--w", type=float, default=0.1, help="weight of the sample's own bottleneck (1 = plain sampling)")
    s.add_argument("--sweep-w", help="comma-separated w values, e.g. 0,0.1,0.3,0.5,1: the w-ablation picture")
    s.add_argument("--sampler", default="ddim", help="ddim | ddpm | dpmsolver++ | unipc")
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--eta", type=float, default=0.1)
    s.add_argument("--timestep-spacing", default="trailing",
                   help="trailing (the release: 999, 989, ..., 9 for 100 of 1000 steps) | leading | linspace")
    s.add_argument("--share-anchor", action="store_true", help="one anchor pass per anchor per step for its K candidates")
    s.add_argument("--batch-size", type=int, default=512, help="trajectories per UNet call")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    s.set_defaults(func=_sample)


def resolve_train_preset(name: str) -> str:
    """`--config cifar10` means configs/diffusion/cifar10.yaml (not the pipeline's configs/cifar10.yaml);
    a path to a file, or any other preset name, resolves as everywhere else."""
    from clsp.config import CONFIG_DIR, resolve_preset

    if not Path(name).is_file():
        own = (CONFIG_DIR / "diffusion" / name).with_suffix(".yaml")
        if own.is_file():
            return str(own)
    return str(resolve_preset(name))


def _train(args: argparse.Namespace) -> int:
    from clsp.config import load_config
    from clsp.diffusion.train import DiffusionTrainConfig, train_diffusion

    cfg = load_config(DiffusionTrainConfig, resolve_train_preset(args.config), args.overrides)
    print(train_diffusion(cfg))
    return 0


def _sample(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np
    import torch

    from clsp.diffusion.model import check_model_matches, load_model
    from clsp.diffusion.sampler import SamplerConfig, generate_positives, sample
    from clsp.grids import candidates_grid, image_grid, save_png, upscale, w_sweep_image
    from clsp.io import atomic_path

    if args.n < 1 or args.k < 1:
        raise UserError("--n and --k must be >= 1")
    sweep = _parse_sweep(args.sweep_w) if args.sweep_w else None
    if sweep and args.anchors is None:
        raise UserError("--sweep-w interpolates towards anchors: give --anchors DATASET")
    cfg = SamplerConfig(sampler=args.sampler, steps=args.steps, eta=args.eta, w=args.w,
                        timestep_spacing=args.timestep_spacing, share_anchor=args.share_anchor, batch_size=args.batch_size)
    unet, scheduler_config = load_model(args.model)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    stem = out.with_suffix("") if out.suffix in (".png", ".npy") else out

    if args.anchors is None:
        images = sample(unet, scheduler_config, args.n, cfg, args.seed, device, progress=True)
        array = images.numpy()[:, None]
        picture = image_grid(images, ncols=math.ceil(math.sqrt(args.n)))
    else:
        anchors = _load_anchors(args.anchors, args.split, args.size, args.n)
        check_model_matches(unet, anchors.shape[1], anchors.shape[3])
        if sweep:
            rows = [(w, generate_positives(unet, scheduler_config, anchors, args.k, dataclasses.replace(cfg, w=w),
                                           args.seed, device, progress=True)) for w in sweep]
            array = np.stack([c.numpy() for _, c in rows])
            picture = w_sweep_image(anchors, rows, title=f"{args.sampler} {args.steps} steps, seed {args.seed}")
        else:
            candidates = generate_positives(unet, scheduler_config, anchors, args.k, cfg, args.seed, device, progress=True)
            array = candidates.numpy()
            picture = candidates_grid(anchors, candidates)
    if not sweep:
        picture = upscale(picture, max(1, 64 // array.shape[-2]))
    with atomic_path(Path(f"{stem}.npy")) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
    save_png(Path(f"{stem}.png"), picture)
    print(f"{stem}.png\n{stem}.npy  uint8 {tuple(array.shape)}")
    return 0


def _load_anchors(name: str, split: str, size: int | None, n: int):
    """The first n images of a split as uint8 (n, H, W, C): in memory, or read one by one when streamed."""
    import numpy as np
    import torch

    from clsp.data import load_dataset
    from clsp.data.registry import ImageSet

    dataset = load_dataset(name, split, size=size)
    if isinstance(dataset, ImageSet):
        return torch.from_numpy(dataset.images[:n].copy())
    return torch.from_numpy(np.stack([dataset[i][0] for i in range(min(n, len(dataset)))]))


def _parse_sweep(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--sweep-w must be comma-separated numbers, got {text!r}") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise UserError(f"--sweep-w values must lie in [0, 1], got {text!r}")
    return values
