"""Datasets by name: a name and a split in, an ImageSource (clsp.data.sets) out, by the loader that
registered the name (clsp.data.registry)."""

from __future__ import annotations

import os

from clsp.data.registry import LOADERS
from clsp.data.sets import ImageSource
from clsp.errors import UserError


def dataset_names() -> list[str]:
    _import_loaders()
    return sorted(n for n in LOADERS if n != "folder") + ["folder:PATH"]


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None, size: int | None = None,
                 require_labels: bool = False, **options) -> ImageSource:
    """Load `split` of dataset `name` (see `dataset_names()`); `size` is the output image side.

    Returns an ImageSet, the split in memory (uint8 `images` (N, H, W, C), `labels` int64 (N,) or None, `classes`,
    `fingerprint`, `mean`, `std`, `source`), or for a set too large for memory a StreamingImageSet with the same
    fields but `images` (`images_at(indices)` decodes the ones asked for); both are `clsp.data.sets.ImageSource`s.

    `require_labels=True` is how a caller that needs labels (evaluation) asks for them: a split without
    labels (a flat folder, STL-10's unlabeled images) is then a UserError rather than a None to trip on.
    """
    _import_loaders()
    if name.startswith("folder:"):
        ds = LOADERS["folder"](path=name[len("folder:"):], split=split, root=root, size=size, **options)
    elif name not in LOADERS or name == "folder":
        raise UserError(f"unknown dataset '{name}'; known: {', '.join(dataset_names())}")
    else:
        ds = LOADERS[name](split=split, root=root, size=size, **options)
    if require_labels and ds.labels is None:
        hint = ("put the images in one subfolder per class" if name.startswith("folder:")
                else "choose a labelled split")
        raise UserError(f"{name} split '{split}' ({ds.source}) has no labels, and labels are needed here; {hint}")
    return ds


def can_download(name: str) -> bool:
    """Whether the loader of `name` may download the set when it is not on disk (its `download` option)."""
    import inspect

    _import_loaders()
    return name in LOADERS and "download" in inspect.signature(LOADERS[name]).parameters


def _import_loaders() -> None:
    """Import the loader modules, one per on-disk format family, whose @register calls fill the registry
    (on first use rather than at import, so that `import clsp.data` stays light)."""
    from clsp.data import cifar  # noqa: F401  cifar10, cifar100 (python pickle batches)
    from clsp.data import folder  # noqa: F401  folder:PATH (ImageFolder or flat folder)
    from clsp.data import imagenet100  # noqa: F401  imagenet100 (ImageNet ImageFolder, 100 classes)
    from clsp.data import mnist  # noqa: F401  fashion-mnist (idx .gz), digits (scikit-learn)
    from clsp.data import stl  # noqa: F401  stl10 (binary)
    from clsp.data import transfer  # noqa: F401  pets, flowers102, dtd, food101, aircraft, caltech101
