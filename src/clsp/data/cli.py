"""`clsp data info` (what a dataset split holds and where it was found) and `clsp data preview`
(a grid of images beside augmented views of each: the quickest check that a recipe is sane)."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect datasets and augmentations")
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    info = sub.add_parser("info", help="count, shape, classes, labels, fingerprint and location of a dataset split")
    _add_dataset_arguments(info)
    info.add_argument("--json", action="store_true", help="print the facts as one JSON object")
    info.set_defaults(func=run_info)

    preview = sub.add_parser("preview", help="write a grid: one row per image, the original then augmented views")
    _add_dataset_arguments(preview)
    preview.add_argument("--aug", default="simclr", help="augmentation recipe: simclr | moco | flip | eval (default simclr)")
    preview.add_argument("--out", required=True, help="output image file (.png)")
    preview.add_argument("--n", type=int, default=8, help="number of images (rows), default 8")
    preview.add_argument("--views", type=int, default=4, help="augmented views per image, default 4")
    preview.add_argument("--seed", type=int, default=0, help="seed for the choice of images and the views")
    preview.set_defaults(func=run_preview)


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="a dataset name (cifar10, stl10, fashion-mnist, pets, ...) or folder:PATH")
    parser.add_argument("--root", default=None, help="folder to look for the dataset in (default: the usual places)")
    parser.add_argument("--split", default="train", help="split (default train)")
    parser.add_argument("--size", type=int, default=None, help="output image side (default: the dataset's)")


def describe(ds) -> dict:
    """The facts `data info` prints, as a dict."""
    from clsp.data.registry import ImageSet

    return {
        "name": ds.name, "split": ds.split, "count": len(ds), "shape": list(ds.shape),
        "storage": "in memory" if isinstance(ds, ImageSet) else "streamed from disk",
        "labels": ds.labels is not None, "num_classes": len(ds.classes), "classes": list(ds.classes),
        "fingerprint": ds.fingerprint, "source": ds.source,
    }


def run_info(args) -> int:
    from clsp.data import load_dataset

    facts = describe(load_dataset(args.name, split=args.split, root=args.root, size=args.size))
    if args.json:
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


def run_preview(args) -> int:
    from clsp.data import load_dataset
    from clsp.data.augment import RECIPES
    from clsp.errors import UserError

    if args.aug not in RECIPES:
        raise UserError(f"unknown augmentation recipe '{args.aug}'; choose one of {', '.join(RECIPES)}")
    if args.n < 1 or args.views < 1:
        raise UserError("--n and --views must be at least 1")
    ds = load_dataset(args.name, split=args.split, root=args.root, size=args.size)
    out = write_preview(ds, args.aug, args.out, n=args.n, views=args.views, seed=args.seed)
    print(f"wrote {out}: {min(args.n, len(ds))} images of {ds.name} ({ds.split}), the original then {args.views} "
          f"'{args.aug}' views each")
    return 0


def preview_grid(ds, recipe: str, n: int = 8, views: int = 4, seed: int = 0):
    """float (n * (1 + views), 3, S, S) in [0, 1]: for each of n seeded images, itself then `views` augmentations."""
    import numpy as np
    import torch

    from clsp.data.augment import make_augment

    size = ds.shape[0]
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False))
    images = torch.from_numpy(np.stack([ds.images[i] if hasattr(ds, "images") else ds[int(i)][0] for i in idx]))
    mean, std = torch.tensor(ds.mean).view(1, 3, 1, 1), torch.tensor(ds.std).view(1, 3, 1, 1)
    augment = make_augment(recipe, size, ds.mean, ds.std)
    torch.manual_seed(seed)
    columns = [images.permute(0, 3, 1, 2).float() / 255]
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
