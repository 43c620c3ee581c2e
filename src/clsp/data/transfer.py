"""The transfer sets of the paper's Table 4, in the layouts torchvision downloads and reads.

torchvision's dataset classes read each set's index files (download=False); we keep their file lists
and labels and decode the images ourselves at the encoder's resolution (`size`, default 64: the STL-10
encoder of the paper). The registry's `train`/`test` are each set's standard transfer protocol:

| name       | folder under --root            | train            | test   | other splits         |
|------------|--------------------------------|------------------|--------|----------------------|
| pets       | oxford-iiit-pet/               | trainval         | test   | trainval             |
| flowers102 | flowers-102/                   | train + val      | test   | val, train-only      |
| dtd        | dtd/dtd/ (partition 1)         | train1 + val1    | test1  | val, train-only      |
| food101    | food-101/                      | train            | test   |                      |
| aircraft   | fgvc-aircraft-2013b/ (variant) | trainval         | test   | val, train-only      |
| caltech101 | caltech101/101_ObjectCategories| 30 per class     | rest   |                      |

Caltech-101 has no official split: `train` is 30 images per class drawn with a fixed seed (0), `test`
the rest, as in the usual linear-transfer protocol (Kornblith et al. 2019 use 30 per class too).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from clsp.data.folder import DEFAULT_MAX_MEMORY_MB, image_list_set
from clsp.data.registry import check_split, register
from clsp.data.sets import IMAGENET_MEAN, IMAGENET_STD, cache_dir
from clsp.errors import UserError

DEFAULT_SIZE = 64
CALTECH_TRAIN_PER_CLASS = 30
CALTECH_SPLIT_SEED = 0

Index = tuple[list[str], list[int], list[str]]  # image paths, labels, class names


def _torchvision_index(make: Callable[[], object], folder: Path, classes: list[str] | None = None) -> Index:
    """Build a torchvision dataset (no download) and take its file list, labels and classes."""
    try:
        ds = make()
    except (RuntimeError, OSError, ValueError, KeyError, IndexError) as e:
        raise UserError(f"cannot read the dataset in {folder}: {e}; download it again "
                        f"(python -m clsp.data.fetch NAME --root DIR)") from None
    files = ds._image_files if hasattr(ds, "_image_files") else ds._images  # pets names its list _images
    return [str(f) for f in files], list(ds._labels), list(classes or ds.classes)


def _pets(root: Path, part: str) -> Index:
    from torchvision.datasets import OxfordIIITPet

    return _torchvision_index(lambda: OxfordIIITPet(str(root), split=part, download=False), root / "oxford-iiit-pet")


def _flowers(root: Path, part: str) -> Index:
    """Flowers-102's classes are numbered 1..102 in its files; the names are not part of the download."""
    from torchvision.datasets import Flowers102

    return _torchvision_index(lambda: Flowers102(str(root), split=part, download=False), root / "flowers-102",
                              classes=[str(i) for i in range(1, 103)])


def _dtd(root: Path, part: str, partition: int = 1) -> Index:
    from torchvision.datasets import DTD

    return _torchvision_index(lambda: DTD(str(root), split=part, partition=partition, download=False), root / "dtd")


def _food(root: Path, part: str) -> Index:
    from torchvision.datasets import Food101

    return _torchvision_index(lambda: Food101(str(root), split=part, download=False), root / "food-101")


def _aircraft(root: Path, part: str) -> Index:
    from torchvision.datasets import FGVCAircraft

    return _torchvision_index(lambda: FGVCAircraft(str(root), split=part, annotation_level="variant", download=False),
                              root / "fgvc-aircraft-2013b")


def _caltech(root: Path, part: str) -> Index:
    """All images by class (torchvision's category order, no background class), then the seeded 30-per-class cut."""
    from torchvision.datasets import Caltech101

    ds = _caltech_dataset(root, Caltech101)
    base = Path(ds.root) / "101_ObjectCategories"
    files = [str(base / ds.categories[y] / f"image_{i:04d}.jpg") for i, y in zip(ds.index, ds.y)]
    labels = np.asarray(ds.y)
    rng = np.random.default_rng(CALTECH_SPLIT_SEED)
    train = np.zeros(len(files), dtype=bool)
    for c in range(len(ds.categories)):
        members = np.flatnonzero(labels == c)
        train[rng.permutation(members)[:CALTECH_TRAIN_PER_CLASS]] = True
    keep = np.flatnonzero(train if part == "train" else ~train)
    return [files[i] for i in keep], [int(labels[i]) for i in keep], list(ds.categories)


def _caltech_dataset(root: Path, cls):
    folder = root / "caltech101" / "101_ObjectCategories"
    if not folder.is_dir():  # checked first: torchvision's Caltech101 would create folders under root
        raise UserError(f"Caltech-101 not found: {folder} is missing; run `python -m clsp.data.fetch caltech101 --root DIR`")
    try:
        return cls(str(root), target_type="category", download=False)
    except (RuntimeError, OSError, ValueError) as e:
        raise UserError(f"cannot read Caltech-101 in {folder}: {e}; download it again") from None


# name -> (folder torchvision reads under root, index function, registry split -> native parts)
SETS: dict[str, tuple[str, Callable[..., Index], dict[str, tuple[str, ...]]]] = {
    "pets": ("oxford-iiit-pet", _pets, {"train": ("trainval",), "test": ("test",), "trainval": ("trainval",)}),
    "flowers102": ("flowers-102", _flowers, {"train": ("train", "val"), "test": ("test",), "val": ("val",),
                                              "train-only": ("train",)}),
    "dtd": ("dtd", _dtd, {"train": ("train", "val"), "test": ("test",), "val": ("val",), "train-only": ("train",)}),
    "food101": ("food-101", _food, {"train": ("train",), "test": ("test",)}),
    "aircraft": ("fgvc-aircraft-2013b", _aircraft, {"train": ("trainval",), "test": ("test",), "val": ("val",),
                                                    "train-only": ("train",)}),
    "caltech101": ("caltech101", _caltech, {"train": ("train",), "test": ("test",)}),
}


def find_transfer_root(name: str, root: str | os.PathLike | None) -> Path | None:
    """The folder to hand torchvision (the parent of the set's own folder): --root or its parent, else the cache."""
    folder = SETS[name][0]
    candidates = [Path(root), Path(root).parent] if root is not None else [cache_dir()]
    for c in candidates:
        if (c / folder).is_dir():
            return c
    return None


def load_transfer(name: str, split: str, root, size: int | None, max_memory_mb: int = DEFAULT_MAX_MEMORY_MB,
                  stream: bool | None = None, **index_options):
    folder, index, splits = SETS[name]
    check_split(name, split, tuple(splits))
    where = find_transfer_root(name, root)
    if where is None:
        looked = Path(root) / folder if root is not None else cache_dir() / folder
        raise UserError(f"{name} not found: {looked} is missing; give --root the folder that holds {folder}/, "
                        f"or run `python -m clsp.data.fetch {name} --root DIR`")
    files: list[str] = []
    labels: list[int] = []
    classes: list[str] | None = None
    for part in splits[split]:
        part_files, part_labels, part_classes = index(where, part, **index_options)
        if classes is not None and part_classes != classes:
            raise UserError(f"{where / folder}: the class lists of {' and '.join(splits[split])} differ; download it again")
        classes = part_classes
        files += part_files
        labels += part_labels
    size = DEFAULT_SIZE if size is None else size
    items = list(zip(files, labels))
    return image_list_set(name, split, items, classes or [], str(where / folder), size, True, max_memory_mb,
                          IMAGENET_MEAN, IMAGENET_STD, stream=stream)


def _register(name: str) -> None:
    def loader(split: str = "train", root=None, size: int | None = None, **options):
        return load_transfer(name, split, root, size, **options)

    loader.__name__ = f"load_{name}"
    loader.__doc__ = f"{name}: splits {', '.join(SETS[name][2])} (see clsp.data.transfer)."
    register(name)(loader)


for _name in SETS:
    _register(_name)
