"""Tiny transfer sets in the on-disk layouts torchvision reads (Oxford-IIIT Pet, DTD), for tests.

Each class gets its own colour, so the sets are linearly separable even for a random encoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(200, 40, 40), (40, 40, 200), (40, 180, 40)]


def _jpg(path: Path, colour, rng) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = rng.integers(18, 30, size=2)
    pixels = np.clip(np.array(colour)[None, None] + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def write_pets(root: Path, per_class: dict[str, int] | None = None, seed: int = 0) -> dict[str, int]:
    """oxford-iiit-pet/images/<Breed_i>.jpg and annotations/{trainval,test}.txt ("id label species breed")."""
    rng = np.random.default_rng(seed)
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    breeds = ["Abyssinian", "beagle"]
    per_class = per_class or {"trainval": 6, "test": 3}
    counts, i = {}, 0
    for split, n in per_class.items():
        lines = []
        for label, breed in enumerate(breeds):
            for _ in range(n):
                i += 1
                _jpg(base / "images" / f"{breed}_{i}.jpg", COLOURS[label], rng)
                lines.append(f"{breed}_{i} {label + 1} {label + 1} 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        counts[split] = len(lines)
    return counts


def write_dtd(root: Path, per_class: dict[str, int] | None = None, seed: int = 1) -> dict[str, int]:
    """dtd/dtd/images/<class>/<name>.jpg and dtd/dtd/labels/{train,val,test}1.txt ("class/name.jpg")."""
    rng = np.random.default_rng(seed)
    data = root / "dtd" / "dtd"
    (data / "labels").mkdir(parents=True, exist_ok=True)
    classes = ["banded", "dotted", "striped"]
    per_class = per_class or {"train": 4, "val": 2, "test": 3}
    counts = {}
    for split, n in per_class.items():
        lines = []
        for label, cls in enumerate(classes):
            for j in range(n):
                name = f"{cls}_{split}_{j:03d}.jpg"
                _jpg(data / "images" / cls / name, COLOURS[label], rng)
                lines.append(f"{cls}/{name}")
        (data / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
        counts[split] = len(lines)
    return counts
