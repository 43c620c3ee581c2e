"""A dataset split as training and evaluation see it: one contract, `ImageSource`, and its two forms.

An `ImageSet` holds its images in memory (and on the GPU on request); a `StreamingImageSet` reads them
from disk through a DataLoader. Both give their length, classes, labels, `mean`/`std` for normalisation,
a content `fingerprint`, `images_at(indices)` and `batches(...)` yielding (uint8 NHWC tensor, int64
labels); `resident` says which form a caller holds, for the few that need the images in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Iterator, Protocol

import numpy as np

from clsp.errors import UserError

# The normalisation of sets that bring none of their own (ImageNet-100, folders, the transfer sets).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageSource(Protocol):
    """What every dataset split offers, whether it is held in memory or streamed from disk.

    A Protocol rather than a base class: the two forms share no code (one indexes an array, the other
    decodes files), only this contract, so callers type against it and never switch on the class.
    """

    name: str
    split: str
    classes: list[str]
    labels: np.ndarray | None          # int64 (N,); None for an unlabelled split
    files: list[str] | None            # each image's file, for a set read from a folder; None for the others
    source: str                        # where it was found, in words
    mean: tuple[float, ...]            # three entries, also for grey data (the encoder repeats its channel)
    std: tuple[float, ...]

    @property
    def resident(self) -> bool:
        """True when the images are in memory (diffusion training and the GPU-resident batch path need them so)."""

    @property
    def fingerprint(self) -> str:
        """A short hash that changes when the images or labels do (runs record it as their input)."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""

    @property
    def image_size(self) -> int: ...

    @property
    def channels(self) -> int: ...

    def __len__(self) -> int: ...

    def images_at(self, indices) -> np.ndarray:
        """The images at `indices` (an int array) as uint8 (n, H, W, C), in that order."""

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                device="cpu") -> Iterator:
        """(uint8 NHWC tensor, int64 labels or None) batches on `device`."""


def cache_dir() -> Path:
    """Where downloads and fingerprints are cached (CLSP_DATA_ROOT overrides)."""
    return Path(os.environ.get("CLSP_DATA_ROOT", Path.home() / ".cache" / "clsp" / "data"))


@dataclass
class ImageSet:
    """A dataset split held in memory as uint8 (N, H, W, C): C = 3, or 1 for grey data (Fashion-MNIST, digits,
    folders of grey images), which stays grey through diffusion and the positives store; the encoder's input
    recipe (clsp.data.augment) repeats a grey channel, so `mean` / `std` always have three entries."""

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray | None
    classes: list[str]
    source: str
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    _fingerprint: str | None = field(default=None, repr=False)
    cache_key: str | None = field(default=None, repr=False)  # see `fingerprint_cache_key`; None = never cached
    files: list[str] | None = field(default=None, repr=False)  # each image's file, for a set read from a folder
    resident: ClassVar[bool] = True

    def __post_init__(self) -> None:
        assert self.images.dtype == np.uint8 and self.images.ndim == 4 and self.images.shape[-1] in (1, 3), self.images.shape
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            assert len(self.labels) == len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    @property
    def fingerprint(self) -> str:
        """Content hash of pixels and labels; looked up in the cache when the loader gave a `cache_key`."""
        if self._fingerprint is None:
            if self.cache_key is None:
                self._fingerprint = content_fingerprint(self.images, self.labels)
            else:
                self._fingerprint = cached_fingerprint(self.cache_key, self.images.shape,
                                                       lambda: content_fingerprint(self.images, self.labels))
        return self._fingerprint

    def images_at(self, indices) -> np.ndarray:
        return np.ascontiguousarray(self.images[np.asarray(indices, dtype=np.int64)])

    def subset(self, indices: np.ndarray, name_suffix: str = "") -> "ImageSet":
        idx = np.asarray(indices)
        return ImageSet(self.name + name_suffix, self.split, self.images_at(idx),
                        None if self.labels is None else self.labels[idx], self.classes, self.source, self.mean, self.std,
                        files=None if self.files is None else [self.files[i] for i in idx])

    def tensors(self, device: str | "object" = "cpu"):
        """(images uint8 NHWC, labels int64 or None) as torch tensors on `device` (GPU-resident sets)."""
        import torch

        images = torch.from_numpy(self.images).to(device, non_blocking=True)
        labels = None if self.labels is None else torch.from_numpy(self.labels).to(device, non_blocking=True)
        return images, labels

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False, device="cpu") -> Iterator:
        """Yield (uint8 NHWC tensor, int64 labels or None) batches; the same interface as streaming sets."""
        import torch

        images, labels = self.tensors(device)
        n = len(self)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
        order = order.to(images.device)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield images[idx], (None if labels is None else labels[idx])


class StreamingImageSet:
    """A large split read image by image from disk through a DataLoader (ImageNet-100, transfer sets).

    `items` is a list of (path, label); `load(path) -> uint8 HWC` decodes and resizes one image.
    An unlabelled set (`labelled=False`) has `labels` None and yields None labels, as an ImageSet does.
    """

    resident = False

    def __init__(self, name: str, split: str, items: list[tuple[str, int]], classes: list[str], source: str,
                 load: Callable[[str], np.ndarray], image_size: int,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                 labelled: bool = True) -> None:
        self.name, self.split, self.items, self.classes, self.source = name, split, items, classes, source
        self.load, self.image_size, self.mean, self.std = load, image_size, mean, std
        self.labels = np.asarray([lab for _, lab in items], dtype=np.int64) if labelled else None
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)

    @property
    def channels(self) -> int:
        return 3

    @property
    def files(self) -> list[str]:
        """Each image's file, in the set's order."""
        return [path for path, _ in self.items]

    @property
    def fingerprint(self) -> str:
        """Hash of the file list, sizes, mtimes, labels and resize: cheap, stable, content-sensitive."""
        if self._fingerprint is None:
            h = hashlib.sha256(f"{self.name}|{self.split}|{self.image_size}".encode())
            for path, label in self.items:
                st = os.stat(path)
                h.update(os.fsencode(Path(path).name) + f"|{st.st_size}|{int(st.st_mtime)}|{label}\n".encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def __getitem__(self, i: int):
        path, label = self.items[i]
        return self.load(path), label

    def images_at(self, indices) -> np.ndarray:
        """Decoded one by one, in the order asked."""
        images = [self[int(i)][0] for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        return np.stack(images) if images else np.empty((0, *self.shape), dtype=np.uint8)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False, device="cpu",
                num_workers: int | None = None) -> Iterator:
        import torch
        from torch.utils.data import DataLoader

        workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        loader = DataLoader(_TorchView(self), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                            num_workers=workers, pin_memory=str(device).startswith("cuda"),
                            generator=torch.Generator().manual_seed(seed), persistent_workers=False)
        try:
            for images, labels in loader:
                labels = labels.to(device, non_blocking=True) if self.labels is not None else None
                yield images.to(device, non_blocking=True), labels
        except UserError as e:  # from a worker it arrives wrapped in its traceback: keep the one-line message
            lines = [line.split("UserError: ", 1)[-1] for line in str(e).splitlines() if line.strip()]
            raise UserError(lines[-1]) from None


class _TorchView:
    def __init__(self, ds: StreamingImageSet) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        import torch

        image, label = self.ds[i]
        return torch.from_numpy(np.ascontiguousarray(image)), label


def content_fingerprint(images: np.ndarray, labels: np.ndarray | None) -> str:
    """A stable hash of the pixels, the shape and the labels."""
    h = hashlib.sha256(json.dumps(list(images.shape)).encode())
    flat = np.ascontiguousarray(images).reshape(-1)
    step = 1 << 26
    for start in range(0, flat.size, step):
        h.update(memoryview(flat[start:start + step]))
    if labels is not None:
        h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


# -- the fingerprint cache: hashing 60k images costs a second or more, looking it up costs nothing ------

FINGERPRINT_CACHE_VERSION = 2  # bump when a loader's output for the same files changes


def fingerprint_cache_key(name: str, split: str, size: int | None, files: list[str | os.PathLike], **options) -> str:
    """Key of a loaded split: its source files (absolute path, size, mtime in ns), split, size and options."""
    h = hashlib.sha256(json.dumps([FINGERPRINT_CACHE_VERSION, name, split, size, sorted(options.items())],
                                  default=str).encode())
    for f in files:
        st = os.stat(f)
        h.update(os.fsencode(Path(f).resolve()) + f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def shown(name: str) -> str:
    """A file or folder name as text that prints and serialises: bytes that are not UTF-8 (Python keeps
    them as surrogates, e.g. b'caf\\xe9' -> 'caf\\udce9') written as escapes ('caf\\xe9')."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def cached_fingerprint(key: str, shape: tuple[int, ...], compute: Callable[[], str]) -> str:
    """`compute()` once per key, remembered in cache_dir()/fingerprints.json (a lost write only costs a rehash)."""
    from clsp.io import read_json_object, write_json_atomic

    path = cache_dir() / "fingerprints.json"
    table = read_json_object(path) or {}
    entry = table.get(key)
    if isinstance(entry, dict) and entry.get("shape") == list(shape) and isinstance(entry.get("fingerprint"), str):
        return entry["fingerprint"]
    fingerprint = compute()
    table[key] = {"fingerprint": fingerprint, "shape": list(shape)}
    try:
        write_json_atomic(path, table)
    except OSError:
        pass  # a read-only cache only means the next load hashes again
    return fingerprint
