"""STL-10 from its binary files (the layout torchvision downloads).

stl10_binary/  {train,test,unlabeled}_X.bin, {train,test}_y.bin, class_names.txt
An X file is N images of 3 x 96 x 96 uint8, each channel stored column-major (Matlab order), so an
image reads as (3, W, H) and is transposed to (H, W, 3). Labels are uint8 1..10 (shifted to 0..9).
The paper trains at 64x64 (default size 64); size=96 keeps the original resolution.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clsp.data.arrays import resize
from clsp.data.registry import check_split, register
from clsp.data.sets import ImageSet, cache_dir, fingerprint_cache_key
from clsp.errors import UserError

FOLDER = "stl10_binary"
SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE
SPLITS = {"train": ("train",), "test": ("test",), "unlabeled": ("unlabeled",), "train+unlabeled": ("train", "unlabeled")}
DEFAULT_SIZE = 64
# The release's constants (PAPER.md), not freshly measured ones, so that normalised inputs equal the release's.
MEAN, STD = (0.4914, 0.4823, 0.4466), (0.2471, 0.2435, 0.2616)


def find_stl10(root: str | os.PathLike | None) -> Path | None:
    """The binary folder: in --root (or --root itself) when given, else in the clsp data cache."""
    candidates = [Path(root) / FOLDER, Path(root)] if root is not None else [cache_dir() / FOLDER]
    for c in candidates:
        if (c / "class_names.txt").is_file() or (c / "train_X.bin").is_file():
            return c
    return None


def count_images(path: Path) -> int:
    """Images in an X file, checking that it holds whole images."""
    if not path.is_file():
        raise UserError(f"STL-10 is incomplete: {path} is missing; download it again")
    nbytes = path.stat().st_size
    if nbytes == 0 or nbytes % IMAGE_BYTES:
        raise UserError(f"{path} is truncated or not an STL-10 image file ({nbytes} bytes is not a multiple of "
                        f"{IMAGE_BYTES}); download it again")
    return nbytes // IMAGE_BYTES


def read_images(path: Path, out: np.ndarray) -> None:
    """Fill `out` (N, size, size, 3) from an X file, in chunks: the unlabeled file is 2.7 GB."""
    raw = np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, 3, SIDE, SIDE)
    size = out.shape[1]
    for start in range(0, len(raw), 4096):
        chunk = np.ascontiguousarray(raw[start:start + 4096].transpose(0, 3, 2, 1))  # (3, W, H) -> (H, W, 3)
        out[start:start + len(chunk)] = resize(chunk, size)


def read_labels(path: Path, n: int) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"STL-10 is incomplete: {path} is missing; download it again")
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != n or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise UserError(f"{path}: expected {n} labels in 1..10, found {len(labels)}; the file is corrupt, download it again")
    return labels


@register("stl10")
def load_stl10(split: str = "train", root=None, size: int | None = None) -> ImageSet:
    """Splits train (5 000 labelled), test (8 000), unlabeled (100 000), train+unlabeled (labels None)."""
    check_split("stl10", split, tuple(SPLITS))
    where = find_stl10(root)
    if where is None:
        looked = Path(root) / FOLDER if root is not None else cache_dir() / FOLDER
        raise UserError(f"STL-10 not found in {looked}; give --root the folder that holds {FOLDER}/, "
                        "or run `python -m clsp.data.fetch stl10 --root DIR`")
    size = DEFAULT_SIZE if size is None else size
    parts = SPLITS[split]
    counts = [count_images(where / f"{part}_X.bin") for part in parts]
    labelled = "unlabeled" not in parts
    labels = read_labels(where / f"{parts[0]}_y.bin", counts[0]) if labelled else None
    rgb = np.empty((sum(counts), size, size, 3), dtype=np.uint8)
    for part, start, n in zip(parts, np.cumsum([0] + counts), counts):
        read_images(where / f"{part}_X.bin", rgb[start:start + n])
    names_file = where / "class_names.txt"
    classes = names_file.read_text().split() if names_file.is_file() else [str(i) for i in range(10)]
    if len(classes) != 10:
        raise UserError(f"{names_file} should name 10 classes, one a line; found {len(classes)}")
    files = [where / f"{part}_X.bin" for part in parts] + ([where / f"{parts[0]}_y.bin"] if labelled else [])
    return ImageSet("stl10", split, rgb, labels, classes, str(where), MEAN, STD,
                    cache_key=fingerprint_cache_key("stl10", split, size, files))
