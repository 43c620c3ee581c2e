"""Download a dataset with torchvision, for users with a network: `python -m clsp.data.fetch NAME --root DIR`.

The files land in the layout the loaders read (`--root DIR` then finds them; DIR defaults to the clsp
data cache, where the loaders look when no --root is given). The download is checked by loading the
dataset. Exit code 0 when the dataset is usable, 1 when it could not be fetched, with the reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


DOWNLOADABLE = ("fashion-mnist", "cifar10", "cifar100", "stl10", "pets", "flowers102", "dtd", "food101", "aircraft",
                "caltech101")


def _torchvision_download(name: str, root: str) -> None:
    """Call torchvision's own download for every split the registry reads."""
    from torchvision import datasets as tv

    downloads = {
        "fashion-mnist": lambda: [tv.FashionMNIST(root, train=t, download=True) for t in (True, False)],
        "cifar10": lambda: tv.CIFAR10(root, download=True),
        "cifar100": lambda: tv.CIFAR100(root, download=True),
        "stl10": lambda: tv.STL10(root, split="train", download=True),
        "pets": lambda: tv.OxfordIIITPet(root, download=True),
        "flowers102": lambda: tv.Flowers102(root, download=True),
        "dtd": lambda: tv.DTD(root, download=True),
        "food101": lambda: tv.Food101(root, download=True),
        "aircraft": lambda: tv.FGVCAircraft(root, download=True),
        "caltech101": lambda: tv.Caltech101(root, download=True),
    }
    downloads[name]()


def fetch(name: str, root: str | Path) -> str:
    """Download `name` into `root` and load its train split; returns a one-line summary."""
    from clsp.data import load_dataset

    if name not in DOWNLOADABLE:
        raise SystemExit(f"fetch: cannot download '{name}'; downloadable: {', '.join(DOWNLOADABLE)}"
                         + (" (ImageNet needs a manual download from image-net.org)" if name == "imagenet100" else ""))
    Path(root).mkdir(parents=True, exist_ok=True)
    _torchvision_download(name, str(root))
    ds = load_dataset(name, "train", root=root)
    return f"{name}: {len(ds)} train images in {ds.source}"


def main(argv: list[str] | None = None) -> int:
    from clsp.data.sets import cache_dir

    parser = argparse.ArgumentParser(prog="python -m clsp.data.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("name", help=", ".join(DOWNLOADABLE))
    parser.add_argument("--root", default=None, help=f"download folder (default: the clsp data cache, {cache_dir()})")
    args = parser.parse_args(argv)
    root = args.root or str(cache_dir())
    try:
        print(f"fetch: {fetch(args.name, root)}")
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - no network, disk full, a corrupt archive: all end the same way
        print(f"fetch: could not fetch {args.name} into {root}: {type(e).__name__}: {e}".replace("\n", " "),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
