"""Fashion-MNIST (idx .gz files) and scikit-learn's digits: the project's offline real data."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from clsp.data.arrays import pad_to, resize, to_grey_uint8
from clsp.data.registry import check_split, register
from clsp.data.sets import ImageSet, cache_dir, fingerprint_cache_key
from clsp.errors import UserError

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MEAN, FASHION_STD = (0.2190,) * 3, (0.3318,) * 3  # of the 32x32 zero-padded images
DIGITS_MEAN, DIGITS_STD = (0.3055,) * 3, (0.3759,) * 3


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (optionally gzipped): magic (0, 0, dtype 0x08, ndim), big-endian dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read {path}: {e}; the file is corrupt or truncated, download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an idx file of unsigned bytes (bad magic number); download it again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) if dims else 0
    if len(raw) - header != expected:
        raise UserError(f"{path} is truncated: expected {expected} bytes of data for shape {dims}, found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def find_fashion_mnist(root: str | os.PathLike | None) -> Path | None:
    """In --root when given (and only there, as for CIFAR), else Debian's dataset-fashion-mnist, then the
    clsp data cache."""
    if root is not None:
        candidates = [Path(root), Path(root) / "fashion-mnist", Path(root) / "FashionMNIST" / "raw"]
    else:
        candidates = [DEBIAN_FASHION_DIR, cache_dir() / "fashion-mnist", cache_dir() / "FashionMNIST" / "raw"]
    for c in candidates:
        if (c / FASHION_FILES["train"][0]).is_file() or (c / FASHION_FILES["test"][0]).is_file():
            return c
    return None


@register("fashion-mnist")
def load_fashion_mnist(split: str = "train", root=None, size: int | None = None, download: bool = True) -> ImageSet:
    check_split("fashion-mnist", split, tuple(FASHION_FILES))
    where = find_fashion_mnist(root)
    if where is None and download and root is None:
        where = _download_fashion_mnist()
    if where is None and root is not None:
        raise UserError(f"Fashion-MNIST not found in --root {root} (nor in its fashion-mnist/ or FashionMNIST/raw/): "
                        "give the folder that holds the four idx .gz files, or leave --root out to use the system copy")
    if where is None:
        raise UserError(f"Fashion-MNIST not found (looked in {DEBIAN_FASHION_DIR}, {cache_dir() / 'fashion-mnist'}); "
                        "install Debian's dataset-fashion-mnist or put the four idx .gz files in --root")
    image_file, label_file = (where / f for f in FASHION_FILES[split])
    if not image_file.is_file() or not label_file.is_file():
        raise UserError(f"Fashion-MNIST split '{split}' is incomplete in {where}: need {image_file.name} and {label_file.name}")
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"{where}: images {images.shape} and labels {labels.shape} do not match; download them again")
    if labels.max(initial=0) >= len(FASHION_CLASSES):
        raise UserError(f"{label_file}: labels out of range 0..9; the file is corrupt")
    grey = to_grey_uint8(images)
    size = 32 if size is None else size
    grey = pad_to(grey, size) if size >= grey.shape[1] else resize(grey, size)
    key = fingerprint_cache_key("fashion-mnist", split, size, [image_file, label_file])
    return ImageSet("fashion-mnist", split, grey, labels, list(FASHION_CLASSES), str(where), FASHION_MEAN, FASHION_STD,
                    cache_key=key)


def _download_fashion_mnist() -> Path | None:
    """torchvision's download into the cache, for users with a network; None when it fails."""
    target = cache_dir()
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(target), train=True, download=True)
        FashionMNIST(str(target), train=False, download=True)
    except Exception:  # noqa: BLE001 - no network is the common case here; the caller explains
        return None
    return find_fashion_mnist(None)


@register("digits")
def load_digits(split: str = "train", root=None, size: int | None = None) -> ImageSet:
    """scikit-learn's 1797 8x8 digits, split deterministically 80/20 into train/test."""
    from sklearn.datasets import load_digits as sk_load_digits

    check_split("digits", split, ("train", "test", "all"))
    data = sk_load_digits()
    images = np.clip(np.round(data.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(images))
    cut = int(0.8 * len(images))
    idx = {"train": order[:cut], "test": order[cut:], "all": np.arange(len(images))}[split]
    grey = to_grey_uint8(images[idx])
    if size is not None:
        grey = resize(grey, size)
    return ImageSet("digits", split, grey, labels[idx], [str(i) for i in range(10)], "sklearn.datasets.load_digits",
                    DIGITS_MEAN, DIGITS_STD)
