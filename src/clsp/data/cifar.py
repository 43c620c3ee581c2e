"""CIFAR-10 and CIFAR-100 from their python pickle batches (the layout torchvision downloads).

cifar-10-batches-py/  data_batch_1..5, test_batch, batches.meta   (keys data, labels / label_names)
cifar-100-python/     train, test, meta                           (keys data, fine_labels / fine_label_names)
Each batch's `data` is (N, 3072) uint8: the 1024 red, then green, then blue values of a 32x32 image, row-major.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from pathlib import Path

import numpy as np

from clsp.data.arrays import resize
from clsp.data.registry import check_split, register
from clsp.data.sets import ImageSet, cache_dir, fingerprint_cache_key
from clsp.errors import UserError

log = logging.getLogger(__name__)

# mean / std: the release's constants (PAPER.md), not freshly measured ones, so that normalised inputs equal the release's.
LAYOUTS = {
    "cifar10": {"folder": "cifar-10-batches-py", "meta": "batches.meta", "names": "label_names", "labels": "labels",
                "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
                "mean": (0.4914, 0.4822, 0.4465), "std": (0.2023, 0.1994, 0.2010)},
    "cifar100": {"folder": "cifar-100-python", "meta": "meta", "names": "fine_label_names", "labels": "fine_labels",
                 "train": ["train"], "test": ["test"],
                 "mean": (0.5071, 0.4865, 0.4409), "std": (0.2673, 0.2564, 0.2762)},
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a dataset file must never run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
               ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict:
    """A CIFAR batch as a dict with str keys (the files were written by Python 2: latin1 strings)."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as e:
        raise UserError(f"cannot read {path}: {e}; the file is corrupt or not a CIFAR batch, download it again") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a CIFAR batch (a pickled dict); download it again")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def find_cifar(name: str, root: str | os.PathLike | None) -> Path | None:
    """The batch folder: in --root (or --root itself) when given, else in the clsp data cache."""
    folder = LAYOUTS[name]["folder"]
    candidates = [Path(root) / folder, Path(root)] if root is not None else [cache_dir() / folder]
    for c in candidates:
        if (c / LAYOUTS[name]["meta"]).is_file():
            return c
    return None


def _download(name: str) -> Path | None:
    """torchvision's download into the cache, for users with a network; None when it fails."""
    try:
        from torchvision.datasets import CIFAR10, CIFAR100

        (CIFAR10 if name == "cifar10" else CIFAR100)(str(cache_dir()), train=True, download=True)
    except Exception as e:  # noqa: BLE001 - no network is the common case; the caller explains
        log.info("download of %s failed: %s", name, e)
        return None
    return find_cifar(name, None)


def _load_cifar(name: str, split: str, root, size: int | None, download: bool) -> ImageSet:
    check_split(name, split, ("train", "test"))
    layout = LAYOUTS[name]
    where = find_cifar(name, root)
    if where is None and download and root is None:
        where = _download(name)
    if where is None:
        looked = Path(root) / layout["folder"] if root is not None else cache_dir() / layout["folder"]
        raise UserError(f"{name} not found: no {layout['meta']} in {looked}; give --root the folder that holds "
                        f"{layout['folder']}/, or run `python -m clsp.data.fetch {name} --root DIR`")
    names = read_pickle(where / layout["meta"]).get(layout["names"])
    if not isinstance(names, list):
        raise UserError(f"{where / layout['meta']} has no '{layout['names']}' list; download {name} again")
    images, labels = [], []
    for file in layout[split]:
        path = where / file
        if not path.is_file():
            raise UserError(f"{name} is incomplete: {path} is missing; download it again")
        batch = read_pickle(path)
        data, lab = batch.get("data"), batch.get(layout["labels"])
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
                or lab is None or len(lab) != len(data):
            raise UserError(f"{path}: expected uint8 data (N, 3072) and N labels; the file is corrupt, download it again")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(lab, dtype=np.int64))
    rgb, y = np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)
    if y.min(initial=0) < 0 or y.max(initial=0) >= len(names):
        raise UserError(f"{where}: labels outside 0..{len(names) - 1}; the files are corrupt, download them again")
    if size is not None:
        rgb = resize(rgb, size)
    key = fingerprint_cache_key(name, split, size, [where / f for f in layout[split]])
    return ImageSet(name, split, rgb, y, [str(n) for n in names], str(where), layout["mean"], layout["std"], cache_key=key)


@register("cifar10")
def load_cifar10(split: str = "train", root=None, size: int | None = None, download: bool = True) -> ImageSet:
    """50 000 train / 10 000 test 32x32 images in 10 classes."""
    return _load_cifar("cifar10", split, root, size, download)


@register("cifar100")
def load_cifar100(split: str = "train", root=None, size: int | None = None, download: bool = True) -> ImageSet:
    """50 000 train / 10 000 test 32x32 images in 100 fine classes."""
    return _load_cifar("cifar100", split, root, size, download)
