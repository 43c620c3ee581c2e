"""The dataset section shared by every command's config, and the one way to load it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from clsp.config import added, check, check_nonnegative

log = logging.getLogger("clsp.data")


@dataclass
class DatasetConfig:
    name: str = "fashion-mnist"       # a registry name (see `clsp data info --help`) or folder:PATH
    root: Optional[str] = None        # where to look first; None = the registry's defaults
    size: Optional[int] = None        # output image side; None = the dataset's default (Fashion-MNIST: 32)
    train_split: str = "train"
    test_split: str = "test"
    subset: int = 0                   # > 0: a fixed random subset of this many images per split (demo, tests)
    holdout: float = 0.2              # a labelled folder without train/ and test/: the share of each class held
                                      # out (seeded) as its test split; other datasets have their own splits
    channels: Optional[int] = added(None)  # 1 or 3; None = as the data is (all-grey images keep 1 channel); 3 keeps
                                      # grey images RGB (e.g. for a 3-channel pretrained UNet)

    def __post_init__(self) -> None:
        check(bool(self.name), "dataset.name", "must not be empty")
        check(self.size is None or self.size >= 8, "dataset.size", f"must be >= 8, got {self.size}")
        check_nonnegative(self.subset, "dataset.subset")
        check(0.0 <= self.holdout < 1.0, "dataset.holdout", f"must be in [0, 1), got {self.holdout}")
        check(self.channels in (None, 1, 3), "dataset.channels", f"must be 1, 3 or null, got {self.channels}")


def load_split(cfg: DatasetConfig, split: str, require_labels: bool = False):
    """Load one split as the config says (subset drawn with a fixed seed, so it is reproducible).

    `require_labels`: evaluation needs labels; an unlabelled split (a flat folder) is then an error.
    A subset larger than the split is the whole split, and said so.
    """
    from clsp.data.catalogue import load_dataset

    options = {"holdout": cfg.holdout} if cfg.name.startswith("folder:") else {}
    ds = load_dataset(cfg.name, split=split, root=cfg.root, size=cfg.size, require_labels=require_labels, **options)
    if cfg.subset and cfg.subset >= len(ds):
        if cfg.subset > len(ds):
            log.warning(f"dataset.subset={cfg.subset}, but {cfg.name} split '{split}' has {len(ds)} images: using all {len(ds)}")
    elif cfg.subset and ds.resident:
        idx = np.sort(np.random.default_rng(0).permutation(len(ds))[: cfg.subset])
        ds = ds.subset(idx)
    if cfg.channels is not None and ds.shape[2] != cfg.channels:
        ds = with_channels(ds, cfg.channels)
    return ds


def with_channels(ds, channels: int):
    """The set with `channels` channels (dataset.channels): grey repeated to RGB, or RGB to grey (ITU-R 601 luma)."""
    import dataclasses

    from clsp.errors import UserError

    if not ds.resident:
        if channels == 3:
            return ds                                  # streamed sets are decoded as RGB
        raise UserError(f"{ds.source} is streamed from disk as RGB; dataset.channels=1 needs it in memory (fewer images)")
    images = ds.images
    if channels == 3:
        images = np.repeat(images, 3, axis=3)
    else:
        images = np.rint(images.astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], np.float32))[..., None].astype(np.uint8)
    return dataclasses.replace(ds, images=np.ascontiguousarray(images), _fingerprint=None, cache_key=None)
