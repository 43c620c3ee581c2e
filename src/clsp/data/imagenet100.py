"""ImageNet-100: the 100-class subset of ImageNet used by CMC (Tian et al. 2019) and solo-learn.

Read from an ImageNet ImageFolder (`train/` and `val/`, one `nXXXXXXXX` folder per class; the raw flat
validation folder must first be sorted into class folders, as every ImageNet recipe does). Only the
100 classes below are kept; labels index their sorted list, so train and val always agree. Images are
resized (shorter side) and centre-cropped to `size` (default 224) and stream from disk.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from clsp.data.folder import DEFAULT_MAX_MEMORY_MB, image_list_set, list_images
from clsp.data.registry import check_split, register
from clsp.data.sets import IMAGENET_MEAN, IMAGENET_STD, ImageSource, cache_dir
from clsp.errors import UserError

log = logging.getLogger(__name__)

# The class list of CMC (github.com/HobbitLong/CMC, imagenet100.txt), also used by solo-learn.
IMAGENET100_WNIDS = tuple("""
n02869837 n01749939 n02488291 n02107142 n13037406 n02091831 n04517823 n04589890 n03062245 n01773797
n01735189 n07831146 n07753275 n03085013 n04485082 n02105505 n01983481 n02788148 n03530642 n04435653
n02086910 n02859443 n13040303 n03594734 n02085620 n02099849 n01558993 n04493381 n02109047 n04111531
n02877765 n04429376 n02009229 n01978455 n02106550 n01820546 n01692333 n07714571 n02974003 n02114855
n03785016 n03764736 n03775546 n02087046 n07836838 n04099969 n04592741 n03891251 n02701002 n03379051
n02259212 n07715103 n03947888 n04026417 n02326432 n03637318 n01980166 n02113799 n02086240 n03903868
n02483362 n04127249 n02089973 n03017168 n02093428 n02804414 n02396427 n04418357 n02172182 n01729322
n02113978 n03787032 n02089867 n02119022 n03777754 n04238763 n02231487 n03032252 n02138441 n02104029
n03837869 n03494278 n04136333 n03794056 n03492542 n02018207 n04067472 n03930630 n03584829 n02123045
n04229816 n02100583 n03642806 n04336792 n03259280 n02116738 n02108089 n03424325 n01855672 n02090622
""".split())
CLASSES = sorted(IMAGENET100_WNIDS)
SPLIT_FOLDERS = {"train": "train", "val": "val", "test": "val"}  # ImageNet's val is the test set of every paper
DEFAULT_SIZE = 224


def find_imagenet(root: str | os.PathLike | None) -> Path | None:
    """A folder holding train/ (or val/): --root (or its imagenet100/, imagenet/) when given, else the cache."""
    base = Path(root) if root is not None else cache_dir()
    for c in (base, base / "imagenet100", base / "imagenet"):
        if (c / "train").is_dir() or (c / "val").is_dir():
            return c
    return None


@register("imagenet100")
def load_imagenet100(split: str = "train", root=None, size: int | None = None,
                     max_memory_mb: int = DEFAULT_MAX_MEMORY_MB, stream: bool | None = True) -> ImageSource:
    """Splits train (~126 700 images) and val (5 000; also called test); streams by default."""
    check_split("imagenet100", split, tuple(SPLIT_FOLDERS))
    where = find_imagenet(root)
    if where is None:
        looked = Path(root) if root is not None else cache_dir()
        raise UserError(f"ImageNet not found: no train/ or val/ folder in {looked} (or its imagenet100/, imagenet/); "
                        "ImageNet cannot be downloaded automatically: give --root the folder holding train/ and val/")
    folder = where / SPLIT_FOLDERS[split]
    if not folder.is_dir():
        raise UserError(f"{folder} is missing; ImageNet-100 {split} needs it (one nXXXXXXXX folder per class)")
    items = []
    present = 0
    for label, wnid in enumerate(CLASSES):
        images = list_images(folder / wnid) if (folder / wnid).is_dir() else []
        present += bool(images)
        items += [(str(p), label) for p in images]
    if not items:
        loose = next((p for p in folder.iterdir() if p.is_file()), None)
        hint = (" (it holds loose files: sort the validation images into class folders first)" if loose else "")
        raise UserError(f"{folder} has none of the 100 ImageNet-100 class folders (e.g. {CLASSES[0]}/){hint}")
    if present < len(CLASSES):
        log.warning("ImageNet-100 %s: only %d of the 100 class folders found in %s", split, present, folder)
    size = DEFAULT_SIZE if size is None else size
    return image_list_set("imagenet100", split, items, list(CLASSES), str(folder), size, True, max_memory_mb,
                          IMAGENET_MEAN, IMAGENET_STD, stream=stream)
