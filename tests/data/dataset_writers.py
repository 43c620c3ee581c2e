"""Writers of small datasets in their real on-disk formats (CIFAR pickles, STL-10 binaries, idx .gz, images)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def random_images(n: int, side: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)


# -- CIFAR: python pickles of dicts, data (N, 3072) = R plane, G plane, B plane, each row-major ---------

def cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> (N, 3072) written element by element from the format's definition."""
    n = len(images)
    rows = np.empty((n, 3072), dtype=np.uint8)
    for c in range(3):
        for r in range(32):
            rows[:, c * 1024 + r * 32: c * 1024 + r * 32 + 32] = images[:, r, :, c]
    return rows


def _dump(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))  # the real files are protocol-2 pickles


def write_cifar10(root: Path, per_batch: int = 3, n_test: int = 4) -> dict:
    """cifar-10-batches-py with 5 train batches of `per_batch` images; returns the expected arrays."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _dump(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch})
    train_x, train_y = random_images(5 * per_batch, 32, 1), np.arange(5 * per_batch) % 10
    for b in range(5):
        sl = slice(b * per_batch, (b + 1) * per_batch)
        _dump(folder / f"data_batch_{b + 1}", {"data": cifar_rows(train_x[sl]), "labels": train_y[sl].tolist(),
                                               "batch_label": f"training batch {b + 1} of 5"})
    test_x, test_y = random_images(n_test, 32, 2), (np.arange(n_test) * 3) % 10
    _dump(folder / "test_batch", {"data": cifar_rows(test_x), "labels": test_y.tolist()})
    return {"folder": folder, "names": names, "train": (train_x, train_y), "test": (test_x, test_y)}


def write_cifar100(root: Path, n_train: int = 6, n_test: int = 3) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    fine = [f"fine{i:02d}" for i in range(100)]
    _dump(folder / "meta", {"fine_label_names": fine, "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    out = {"folder": folder, "names": fine}
    for split, n, seed in (("train", n_train, 3), ("test", n_test, 4)):
        x, y = random_images(n, 32, seed), (np.arange(n) * 17) % 100
        _dump(folder / split, {"data": cifar_rows(x), "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist()})
        out[split] = (x, y)
    return out


# -- STL-10: raw uint8, each image 3 planes of 96x96 stored column-major; labels uint8 1..10 -----------

def stl_bytes(images: np.ndarray) -> bytes:
    """(N, 96, 96, 3) -> the X.bin bytes, offset = n*27648 + c*9216 + col*96 + row (the format's definition)."""
    n = len(images)
    flat = np.empty(n * 27648, dtype=np.uint8)
    rows, cols = np.meshgrid(np.arange(96), np.arange(96), indexing="ij")
    for i in range(n):
        for c in range(3):
            flat[i * 27648 + c * 9216 + cols * 96 + rows] = images[i, :, :, c]
    return flat.tobytes()


def write_stl10(root: Path, n_train: int = 3, n_test: int = 2, n_unlabeled: int = 4) -> dict:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    out = {"folder": folder, "names": names}
    for split, n, seed in (("train", n_train, 5), ("test", n_test, 6), ("unlabeled", n_unlabeled, 7)):
        x = random_images(n, 96, seed)
        x[:, 0, :, 0] = 255  # a bright red top row: the orientation must survive the column-major layout
        x[:, :, 0, 1] = 0    # a dark green left column
        (folder / f"{split}_X.bin").write_bytes(stl_bytes(x))
        y = None
        if split != "unlabeled":
            y = (np.arange(n) + 2) % 10
            (folder / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())
        out[split] = (x, y)
    return out


# -- idx .gz (Fashion-MNIST) ----------------------------------------------------------------------

def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(root: Path, n_train: int = 5, n_test: int = 3) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n, seed in (("train", n_train, 8), ("t10k", n_test, 9)):
        x = np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = np.arange(n) % 10
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y)))
        out["train" if prefix == "train" else "test"] = (x, y)
    return out


# -- image files ---------------------------------------------------------------------------------

def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def write_jpg(path: Path, side: int = 12, seed: int = 0, size: tuple[int, int] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size or (side, side)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=95)
    return path


def write_image_folder(root: Path, classes: dict[str, int], side: int = 16, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """An ImageFolder of lossless PNGs: {class: count}; returns the pixels per class in file order."""
    pixels = {}
    for k, (name, count) in enumerate(classes.items()):
        pixels[name] = []
        for i in range(count):
            image = random_images(1, side, seed + 100 * k + i)[0]
            write_png(root / name / f"img_{i:03d}.png", image)
            pixels[name].append(image)
    return pixels
