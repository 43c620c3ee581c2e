"""The dataset section shared by every command's config, and the one way to load it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from clsp.config import check, check_nonnegative


@dataclass
class DatasetConfig:
    name: str = "fashion-mnist"       # a registry name (see `clsp data info --help`) or folder:PATH
    root: Optional[str] = None        # where to look first; None = the registry's defaults
    size: Optional[int] = None        # output image side; None = the dataset's default (Fashion-MNIST: 32)
    train_split: str = "train"
    test_split: str = "test"
    subset: int = 0                   # > 0: a fixed random subset of this many images per split (demo, tests)

    def __post_init__(self) -> None:
        check(bool(self.name), "dataset.name", "must not be empty")
        check(self.size is None or self.size >= 8, "dataset.size", f"must be >= 8, got {self.size}")
        check_nonnegative(self.subset, "dataset.subset")


def load_split(cfg: DatasetConfig, split: str, require_labels: bool = False):
    """Load one split as the config says (subset drawn with a fixed seed, so it is reproducible).

    `require_labels`: evaluation needs labels; an unlabelled split (a flat folder) is then an error.
    """
    from clsp.data.registry import ImageSet, load_dataset

    ds = load_dataset(cfg.name, split=split, root=cfg.root, size=cfg.size, require_labels=require_labels)
    if cfg.subset and isinstance(ds, ImageSet) and cfg.subset < len(ds):
        idx = np.sort(np.random.default_rng(0).permutation(len(ds))[: cfg.subset])
        ds = ds.subset(idx)
    return ds
