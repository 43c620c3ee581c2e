"""The evaluations' configs (the linear probe, the positives' judge and its reference classifier), the
transfer sets' names and the embedding methods. Torch-free, so that `clsp eval ... --help`, built from them, imports no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from clsp.config import check, check_positive, field
from clsp.positives.config import SPACES


EMBED_METHODS = ("tsne", "umap")   # `clsp eval embed --method`: scikit-learn's t-SNE, umap-learn's UMAP

TRANSFER_SETS = ("cifar10", "cifar100", "pets", "flowers102", "dtd", "caltech101", "food101", "aircraft")


@dataclass
class LinearProbeConfig:
    epochs: int = 100               # probe epochs
    batch_size: int = 256           # probe batch
    lr: float = 1.0                 # probe learning rate (SGD)
    milestones: list[int] = field(default_factory=lambda: [60, 80])  # epochs where lr is multiplied by gamma
    gamma: float = 0.1              # the lr's factor at each milestone
    seed: int = 0                   # probe seed
    on_the_fly: bool = False        # recompute features from flipped images every step (slow; for checking)

    def __post_init__(self) -> None:
        check_positive(self.epochs, "epochs")
        check_positive(self.batch_size, "batch_size")
        check_positive(self.lr, "lr")
        check_positive(self.gamma, "gamma")
        check(list(self.milestones) == sorted(self.milestones), "milestones", f"must be increasing, got {self.milestones}")


@dataclass
class ReferenceConfig:
    width: int = 32             # channels of the first block; 2x and 4x in the next two
    epochs: int = 2
    batch_size: int = 128
    lr: float = 2e-3            # Adam, one-cycle schedule
    max_train: int = 60000      # a fixed random subset of the train split, when it is larger (time, not accuracy)
    # Fashion-MNIST at 16 px: 86.8% test top-1 with these settings (60k images, 2 epochs), 82.4% with width 16 and
    # 20k images (3 epochs): measured with /tmp scripts on this 2-core machine, see the issue 12 note.
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("width", "epochs", "batch_size", "lr", "max_train"):
            check_positive(getattr(self, key), f"reference.{key}")


@dataclass
class PositivesEvalConfig:
    n: int = 1000                                  # anchors whose stored candidates are judged
    real_n: int = 5000                             # real training images for the Frechet reference and the NN bank
    sweep_w: List[float] = field(list)             # w values to sample afresh (needs the model); [] = no sweep
    sweep_layers: List[int] = field(list)          # interpolation depths to sample afresh at the store's w; [] = none
    sweep_start: List[float] = field(list)         # partial-noise starts s to sample afresh; [] = none
    sweep_start_w: List[float] = field(list)       # the w of each start curve; [] = the store's w only
    sweep_floor: List[float] = field(list)         # label-free similarity floors of the per-candidate start; [] = none
    strength_grid: List[float] = field(list)       # the starts the per-candidate rule tries; [] = sweep_start (or 0.8, 0.6, 0.4)
    strength_space: str = "unet"                   # the rule's label-free feature space (clsp.positives.strength.SPACES)
    sweep_n: int = 100                             # anchors per value in the sweeps
    sweep_k: int = 2                               # candidates per anchor in the sweeps
    reference: ReferenceConfig = field(ReferenceConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("n", "real_n", "sweep_n", "sweep_k"):
            check_positive(getattr(self, key), f"positives.{key}")
        check(all(0.0 <= w <= 1.0 for w in self.sweep_w), "positives.sweep_w", f"values must be in [0, 1], got {self.sweep_w}")
        check(all(n >= 1 for n in self.sweep_layers), "positives.sweep_layers", f"values must be >= 1, got {self.sweep_layers}")
        for key in ("sweep_start", "strength_grid"):
            check(all(0.0 < s <= 1.0 for s in getattr(self, key)), f"positives.{key}", f"values must be in (0, 1], got {getattr(self, key)}")
        check(all(0.0 <= w <= 1.0 for w in self.sweep_start_w), "positives.sweep_start_w", f"values must be in [0, 1], got {self.sweep_start_w}")
        check(all(-1.0 <= f <= 1.0 for f in self.sweep_floor), "positives.sweep_floor", f"values must be cosines in [-1, 1], got {self.sweep_floor}")
        check(self.strength_space in SPACES, "positives.strength_space", f"must be one of {', '.join(SPACES)}, got {self.strength_space!r}")

    @property
    def sweeps(self) -> bool:
        """Whether anything is sampled afresh (which needs the diffusion model)."""
        return bool(self.sweep_w or self.sweep_layers or self.sweep_start or self.sweep_floor)

    @property
    def grid(self) -> List[float]:
        return sorted(self.strength_grid or self.sweep_start or [0.8, 0.6, 0.4], reverse=True)
