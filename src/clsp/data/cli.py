"""`clsp data info` (what a dataset split holds and where it was found) and `clsp data preview`
(a grid of images beside augmented views of each: the quickest check that a recipe is sane)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from clsp.config import check_given, check_positive, field
from clsp.data.config import DatasetConfig


@dataclass
class InfoConfig:
    """`clsp data info`: what one split of a dataset holds, as a run would load it."""

    dataset: DatasetConfig = field(DatasetConfig)
    split: str = "train"
    json: bool = False                # print the facts as one JSON object


@dataclass
class PreviewConfig:
    """`clsp data preview`: a grid, one row per image: the original, then augmented views (OUT_DIR/preview.png)."""

    dataset: DatasetConfig = field(DatasetConfig)
    split: str = "train"
    aug: str = "simclr"               # augmentation recipe: simclr | moco | flip | eval
    n: int = 8                        # images (rows)
    views: int = 4                    # augmented views per image
    seed: int = 0                     # fixes the choice of images and the views
    out_dir: str = ""

    def __post_init__(self) -> None:
        check_given(bool(self.out_dir), "out_dir", "must name the directory to write preview.png into (--out DIR)")
        check_positive(self.n, "n")
        check_positive(self.views, "views")


DATASET_FLAGS = {"--root": ("dataset.root", "folder to look for the dataset in (default: the usual places)"),
                 "--split": ("split", "split"),
                 "--size": ("dataset.size", "output image side (default: the dataset's)"),
                 "--holdout": ("dataset.holdout", "the share of a labelled folder without train/ and test/ held out as "
                                                  "its test split")}


def register(subparsers) -> None:
    from clsp.cli import Flag, add_command, config_command

    data = add_command(subparsers, "data")
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    name = {"NAME": Flag("dataset.name", "a dataset name (cifar10, stl10, fashion-mnist, pets, ...) or folder:PATH")}
    flags = {flag: Flag(key, text) for flag, (key, text) in DATASET_FLAGS.items()}

    info = sub.add_parser("info", help="count, shape, classes, labels, fingerprint and location of a dataset split")
    config_command(info, InfoConfig, run_info, positionals=name,
                   flags={**flags, "--json": Flag("json", "print the facts as one JSON object")},
                   examples=["clsp data info fashion-mnist", "clsp data info folder:/path/to/images --split test"])

    preview = sub.add_parser("preview", help="write a grid: one row per image, the original then augmented views")
    config_command(preview, PreviewConfig, run_preview, positionals=name, flags={
        **flags, "--aug": Flag("aug", "augmentation recipe: simclr | moco | flip | eval"),
        "--out": Flag("out_dir", "the directory to write preview.png into"),
        "--n": Flag("n", "number of images (rows)"), "--views": Flag("views", "augmented views per image"),
        "--seed": Flag("seed", "seed for the choice of images and the views")},
        examples=["clsp data preview fashion-mnist --aug simclr --out runs/views"])


def describe(ds) -> dict:
    """The facts `data info` prints, as a dict."""
    return {
        "name": ds.name, "split": ds.split, "count": len(ds), "shape": list(ds.shape),
        "storage": "in memory" if ds.resident else "streamed from disk",
        "labels": ds.labels is not None, "num_classes": len(ds.classes), "classes": list(ds.classes),
        "fingerprint": ds.fingerprint, "source": ds.source,
    }


def run_info(cfg: InfoConfig) -> int:
    from clsp.data.config import load_split

    facts = describe(load_split(cfg.dataset, cfg.split))
    if cfg.json:
        print(json.dumps(facts, indent=2))
        return 0
    h, w, c = facts["shape"]
    first = ", ".join(facts["classes"][:5]) + (", ..." if facts["num_classes"] > 5 else "")
    print(f"dataset      {facts['name']}  split {facts['split']}")
    print(f"found in     {facts['source']}")
    print(f"images       {facts['count']} of {h}x{w}x{c} uint8 ({facts['storage']})")
    print(f"classes      {facts['num_classes']}" + (f": {first}" if first else ""))
    print(f"labels       {'yes' if facts['labels'] else 'no (unlabeled)'}")
    print(f"fingerprint  {facts['fingerprint']}")
    return 0


def run_preview(cfg: PreviewConfig) -> int:
    from pathlib import Path

    from clsp.data.augment import RECIPES
    from clsp.data.config import load_split
    from clsp.errors import UserError

    if cfg.aug not in RECIPES:
        raise UserError(f"unknown augmentation recipe '{cfg.aug}'; choose one of {', '.join(RECIPES)}")
    ds = load_split(cfg.dataset, cfg.split)
    out = write_preview(ds, cfg.aug, Path(cfg.out_dir) / "preview.png", n=cfg.n, views=cfg.views, seed=cfg.seed)
    print(f"wrote {out}: {min(cfg.n, len(ds))} images of {ds.name} ({ds.split}), the original then {cfg.views} "
          f"'{cfg.aug}' views each")
    return 0


def preview_grid(ds, recipe: str, n: int = 8, views: int = 4, seed: int = 0):
    """float (n * (1 + views), 3, S, S) in [0, 1]: for each of n seeded images, itself then `views` augmentations."""
    import numpy as np
    import torch

    from clsp.data.augment import make_augment

    size = ds.shape[0]
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False))
    images = torch.from_numpy(ds.images_at(idx))
    mean, std = torch.tensor(ds.mean).view(1, 3, 1, 1), torch.tensor(ds.std).view(1, 3, 1, 1)
    augment = make_augment(recipe, size, ds.mean, ds.std)
    torch.manual_seed(seed)
    columns = [images.permute(0, 3, 1, 2).float().expand(-1, 3, -1, -1) / 255]   # grey as the views show it: 3 channels
    columns += [(augment(images) * std + mean).clamp(0, 1) for _ in range(views)]
    return torch.stack(columns, dim=1).flatten(0, 1)


def write_preview(ds, recipe: str, out, n: int = 8, views: int = 4, seed: int = 0):
    """Save the grid as a PNG (atomically), tiles enlarged to >= 96 px so that small images stay visible."""
    from pathlib import Path

    import torch.nn.functional as F
    from torchvision.utils import save_image

    from clsp.io import atomic_path

    grid = preview_grid(ds, recipe, n, views, seed)
    scale = max(1, -(-96 // grid.shape[-1]))
    if scale > 1:
        grid = F.interpolate(grid, scale_factor=scale, mode="nearest")
    out = Path(out)
    with atomic_path(out) as tmp:
        save_image(grid, tmp, nrow=1 + views, padding=2, pad_value=1.0, format="png")
    return out
