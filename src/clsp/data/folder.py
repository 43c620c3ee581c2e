"""Folders of image files: `folder:PATH`, and the image-list machinery ImageNet-100 and the transfer sets share.

Two layouts are understood:
- an ImageFolder: one subfolder per class (labels = the sorted subfolder names), images anywhere below;
- a flat folder of unlabeled images (labels None; asking for labels, `require_labels=True`, is an error).
PATH may also hold split subfolders `train/` and `test/` (or `val/`), each in one of those layouts.
Otherwise PATH is one set (split `all`): a labelled one is split in two, a seeded random `holdout`
share of each class as split `test` and the rest as split `train`; a flat one is split `train` whole.

Every image is decoded to RGB, its shorter side resized to `size` (antialiased) and centre-cropped to
size x size; an in-memory set whose images are all grey keeps one channel (`keep_grey`). A set that fits in `max_memory_mb` is decoded once into memory (an ImageSet); a larger
one streams from disk through a DataLoader (a StreamingImageSet).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from clsp.data.registry import register
from clsp.data.sets import (IMAGENET_MEAN, IMAGENET_STD, ImageSet, ImageSource, StreamingImageSet, fingerprint_cache_key,
                             shown)
from clsp.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_MAX_MEMORY_MB = 2048
SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val"), "val": ("val",)}


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def read_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """One image as uint8 (size, size, 3): RGB, shorter side resized to `size`, centre crop."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            if scale != 1:
                im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR,
                               reducing_gap=None)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            return np.array(im.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except Image.DecompressionBombError as e:
        raise _too_large(path, e) from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises these for missing, truncated and corrupt files
        raise UserError(f"cannot read image {path}: {e}; remove or replace the file") from None


def image_side(path: str | os.PathLike) -> int:
    """The shorter side of an image (reads the header only): the default output size of a folder."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return min(im.size)
    except Image.DecompressionBombError as e:
        raise _too_large(path, e) from None
    except (OSError, ValueError, SyntaxError) as e:
        raise UserError(f"cannot read image {path}: {e}; remove or replace the file") from None


def _too_large(path, error: Exception) -> UserError:
    """Pillow refuses to decode an image of more than twice Image.MAX_IMAGE_PIXELS (a decompression bomb)."""
    from PIL import Image

    return UserError(f"image {path} is too large to decode ({error}); Pillow's limit is {2 * Image.MAX_IMAGE_PIXELS:,} "
                     "pixels, a guard against decompression bombs: remove the file or shrink it")


def list_images(folder: Path, seen: set | None = None) -> list[Path]:
    """Image files below `folder`, in sorted order, following links as torchvision's ImageFolder does but
    each real folder and each real file once: a link back up the tree (a cycle) or a second link to the
    same image adds nothing. `seen` (real paths) is shared by the calls that scan one dataset."""
    seen = set() if seen is None else seen
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        seen.add(os.path.realpath(dirpath))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.realpath(os.path.join(dirpath, d)) not in seen)
        for name in sorted(filenames):
            real = os.path.realpath(os.path.join(dirpath, name))
            if is_image(Path(name)) and real not in seen:
                seen.add(real)
                found.append(Path(dirpath) / name)
    return found


def scan_folder(folder: Path) -> tuple[list[tuple[str, int]], list[str], bool]:
    """(items (path, label), classes, labelled) for an ImageFolder or a flat folder; label -1 when flat."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give folder:PATH with PATH a folder of images")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file() and is_image(p)]
    # A link inside one class folder that leads to the root or to another class adds none of their images.
    seen = {os.path.realpath(p) for p in [folder, *entries] if p.is_dir() or p in files}
    class_dirs = [(d, list_images(d, seen)) for d in entries if d.is_dir()]
    class_dirs = [(d, images) for d, images in class_dirs if images]
    if files and class_dirs:
        raise UserError(f"{folder} mixes images ({files[0].name}, ...) with class subfolders ({class_dirs[0][0].name}/, "
                        "...); put every image in a class subfolder, or use a flat folder of images only")
    if class_dirs:
        classes = [shown(d.name) for d, _ in class_dirs]
        items = [(str(p), label) for label, (_, images) in enumerate(class_dirs) for p in images]
        return items, classes, True
    if files:
        return [(str(p), -1) for p in files], [], False
    raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder} or its subfolders")


def image_list_set(name: str, split: str, items: list[tuple[str, int]], classes: list[str], source: str,
                   size: int, labelled: bool = True, max_memory_mb: int = DEFAULT_MAX_MEMORY_MB,
                   mean=IMAGENET_MEAN, std=IMAGENET_STD, stream: bool | None = None) -> ImageSource:
    """In memory when the decoded set fits in `max_memory_mb` (or `stream=False`), else streamed from disk."""
    if not items:
        raise UserError(f"{source}: no images for split '{split}'")
    if stream is None:
        stream = len(items) * size * size * 3 > max_memory_mb * 2**20
    load = functools.partial(read_image, size=size)
    if stream:
        return StreamingImageSet(name, split, items, classes, source, load, size, mean, std, labelled=labelled)
    paths = [path for path, _ in items]
    images = keep_grey(decode_all(paths, load, desc=f"decoding {name} {split}"))
    labels = np.asarray([label for _, label in items], dtype=np.int64) if labelled else None
    key = fingerprint_cache_key(name, split, size, paths)
    return ImageSet(name, split, images, labels, classes, source, tuple(mean), tuple(std), cache_key=key, files=paths)


def keep_grey(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) -> (N, H, W, 1) when every image is grey (R = G = B everywhere), else unchanged:
    a folder of grey images (MNIST-like) is modelled and stored as grey, as Fashion-MNIST is."""
    grey = bool(np.array_equal(images[..., 0], images[..., 1]) and np.array_equal(images[..., 1], images[..., 2]))
    return np.ascontiguousarray(images[..., :1]) if grey else images


def decode_all(paths: list[str], load, desc: str) -> np.ndarray:
    """Decode images in a thread pool (PIL releases the GIL while decoding) into one (N, H, W, 3) array."""
    from tqdm import tqdm

    workers = min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        images = list(tqdm(pool.map(load, paths, chunksize=64), total=len(paths), desc=desc, unit="img",
                           disable=len(paths) < 5000 or bool(os.environ.get("CLSP_QUIET"))))
    return np.stack(images)


def has_split_folders(path: Path) -> bool:
    return (path / "train").is_dir() and any((path / s).is_dir() for s in ("test", "val"))


def folder_split(path: Path, split: str) -> Path:
    """PATH/<split folder> when PATH holds split subfolders, else PATH itself (one set; see `holdout_split`)."""
    if has_split_folders(path):
        for candidate in SPLIT_FOLDERS.get(split, ()):
            if (path / candidate).is_dir():
                return path / candidate
        present = [s for s in ("train", "val", "test") if (path / s).is_dir()]
        raise UserError(f"{path} has no split folder for '{split}'; it has {', '.join(present)}")
    if split not in ("train", "test", "all"):
        raise UserError(f"{path} has no split '{split}': it is one set (splits train, test and all)")
    return path


def holdout_split(labels: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """A boolean mask of the held-out images: in each class, a seeded random `share` of its images
    (rounded; at least one, and never all, of a class of two or more), so every class with two images
    or more is in both splits. Written here because scikit-learn's stratified splits refuse a class of one."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        count = 0 if len(members) < 2 or share <= 0 else min(max(round(share * len(members)), 1), len(members) - 1)
        held[rng.permutation(members)[:count]] = True
    return held


@register("folder")
def load_folder(path: str, split: str = "train", root=None, size: int | None = None, holdout: float = 0.2,
                max_memory_mb: int = DEFAULT_MAX_MEMORY_MB, stream: bool | None = None) -> ImageSource:
    """`folder:PATH`: an ImageFolder or a flat folder; size None = the first image's shorter side.
    `holdout`: the share of each class of a labelled folder without split subfolders that is its test split."""
    if not path:
        raise UserError("folder: needs a path, e.g. folder:/data/my-images")
    base = Path(path).expanduser()
    if not base.is_dir():
        raise UserError(f"folder {base} does not exist; give folder:PATH with PATH a folder of images")
    folder = folder_split(base, split)
    items, classes, labelled = scan_folder(folder)
    source = str(folder)
    if folder == base and split != "all":
        items, source = _one_set_split(base, split, items, labelled, holdout)
    size = image_side(items[0][0]) if size is None else size
    return image_list_set(f"folder:{shown(str(base))}", split, items, classes, shown(source), size, labelled, max_memory_mb,
                          stream=stream)


def _one_set_split(base: Path, split: str, items: list[tuple[str, int]], labelled: bool,
                   holdout: float) -> tuple[list[tuple[str, int]], str]:
    """Split train or test of a folder that is one set, and the sentence that says how it was made."""
    if not labelled:
        if split == "test":
            raise UserError(f"{base} is a flat folder (no class subfolders), so it has no labels and no test split; "
                            "evaluate on a labelled set (in the pipeline: eval.dataset.name=NAME or folder:PATH)")
        return items, str(base)
    if holdout <= 0:
        if split == "test":
            raise UserError(f"{base} has no test/ subfolder and dataset.holdout=0; set dataset.holdout (e.g. 0.2) to "
                            "hold out a share of each class, or put the images in train/ and test/ subfolders")
        return items, str(base)
    held = holdout_split(np.asarray([label for _, label in items]), holdout)
    chosen = [item for item, h in zip(items, held) if h == (split == "test")]
    percent = f"{100 * holdout:g}%"
    if not chosen:
        raise UserError(f"{base}: holding out {percent} of each class leaves split {split} empty (a class needs 2 "
                        "images or more to give one to each split); add images, or put them in train/ and test/ subfolders")
    return chosen, (f"{base} (split {split}: {len(chosen)} of its {len(items)} images; the test split is {percent} of "
                    f"each class held out with seed 0, dataset.holdout={holdout:g})")
