"""The batch path of pretraining: which images a step trains on, and their views, made on the device.

Small sets (CIFAR, STL at 64 px, Fashion-MNIST) and their positives live on the device as uint8: their
loader is clsp.training.ResidentBatches, shared with diffusion training, which gathers each step's
images by `epoch_batch_indices(global step)` on the device, so no DataLoader worker and no
host-to-device copy of pixels is involved; a step then draws one synthetic candidate per image. Large
sets (StreamingImageSet) come through a DataLoader whose batch sampler uses the same step-derived
indices. Either way a batch is (dataset indices, uint8 images, labels or None), and all randomness of
a step (augmentation, candidate choice, dropout) is seeded from (seed, global step, rank): a resumed
run replays exactly what an uninterrupted one does.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from clsp.training import epoch_batch_indices, rank_and_world, step_seed


@contextlib.contextmanager
def step_rng(seed: int, step: int, rank: int, device: torch.device) -> Iterator[None]:
    """Torch's global RNG (CPU and this device) seeded for one step, restored afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.manual_seed(step_seed(seed, step, rank))
        yield


class StepBatchSampler:
    """Batch sampler for streaming sets: the batches of `epoch_batch_indices`, epoch by epoch.

    Lightning calls `set_epoch`; `start_step` (set when training starts) skips the steps of the epoch
    a resumed run has already done, so the remaining steps see the same images as without the stop.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.start_step = 0, 0

    def __len__(self) -> int:
        return self.n // (self.batch_size * rank_and_world()[1])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rank, size = rank_and_world()
        per_epoch = len(self)
        first = max(self.epoch * per_epoch, self.start_step)
        for step in range(first, (self.epoch + 1) * per_epoch):
            yield epoch_batch_indices(self.n, self.batch_size, step, self.seed, rank, size).tolist()


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, label = self.dataset[i]
        return i, torch.from_numpy(np.ascontiguousarray(image)), label


class StreamingBatches:
    """A StreamingImageSet read by a DataLoader (workers decode) that yields (indices, uint8, labels or None)."""

    def __init__(self, dataset, batch_size: int, seed: int, workers: int = 8) -> None:
        self.dataset, self.batch_size, self.seed, self.workers = dataset, batch_size, seed, workers
        self.sampler = StepBatchSampler(len(dataset), batch_size, seed)

    def to(self, device: torch.device) -> "StreamingBatches":
        return self

    def steps_per_epoch(self, world: int) -> int:
        return len(self.dataset) // (self.batch_size * world)

    def loader(self, world: int, start_step: int = 0) -> torch.utils.data.DataLoader:
        """Lightning's train loader; `start_step` (a resumed checkpoint's) skips the steps already done."""
        self.sampler.start_step = start_step
        collate = None if self.dataset.labels is not None else _without_labels
        return torch.utils.data.DataLoader(_Indexed(self.dataset), batch_sampler=self.sampler, num_workers=self.workers,
                                           collate_fn=collate, pin_memory=torch.cuda.is_available(),
                                           persistent_workers=self.workers > 0)


def _without_labels(items: list) -> tuple[Tensor, Tensor, None]:
    """Collate an unlabelled set's items: its placeholder labels become None, as a resident set's are."""
    indices, images, _ = torch.utils.data.default_collate(items)
    return indices, images, None


class ClassMates:
    """The oracle's draw: for each anchor, another real training image of its class, uniformly at random.

    The per-class index tables are built once on the device (`to`): `members` lists the dataset's indices
    sorted by label, class c owning members[start[c] : start[c] + count[c]], and `place[i]` is image i's
    position in its class. A draw is then a few gathers with no host sync: r uniform in [0, count - 1),
    shifted past the anchor's own place, so the anchor itself is never drawn unless it is alone in its class.
    Reads the images of a resident batch source (clsp.training.ResidentBatches), whichever device they are on.
    """

    def __init__(self, batches) -> None:
        self.batches = batches
        self._tables()

    def _tables(self) -> None:
        labels = self.batches.labels
        self.members = torch.argsort(labels, stable=True)
        self.count = torch.bincount(labels)
        self.start = torch.cumsum(self.count, 0) - self.count
        self.place = torch.empty_like(self.members)
        self.place[self.members] = torch.arange(len(labels), device=labels.device) - self.start[labels[self.members]]

    def to(self, device: torch.device) -> "ClassMates":
        if self.members.device != torch.device(device):
            self._tables()               # after the batches moved (pretraining moves them first)
        return self

    def draw(self, indices: Tensor, generator: torch.Generator) -> Tensor:
        """One class-mate's dataset index per anchor index (the anchor's own when it is alone in its class)."""
        labels = self.batches.labels[indices]
        others = (self.count[labels] - 1).clamp_min(1)
        r = (torch.rand(indices.shape, device=indices.device, generator=generator) * others).long().clamp_max(others - 1)
        r = r + (r >= self.place[indices]).long() * (self.count[labels] > 1).long()
        return self.members[self.start[labels] + r]

    def __call__(self, indices: Tensor, generator: torch.Generator) -> Tensor:
        """uint8 images of one class-mate per anchor."""
        return self.batches.images[self.draw(indices, generator)]


class ViewMaker:
    """The views of a batch: two augmentations of each image and, when asked, P third views (P =
    `per_step`, 1 by default), each the positive of the CLSP term:
        synthetic   an augmented synthetic candidate (CLSP), P drawn without replacement from the K stored;
        augment     a further augmentation of the image (the paper's "+aug" control);
        oracle      an augmented other real image of the anchor's class (`class_mates`): labels, an upper bound.
    The third views take the first view's augmentation; `second_augment` (None: the same as `augment`) is
    the second view's, for asymmetric recipes. Views that share an augmentation and an image size are
    augmented in one call. Views come in order [x1, x2, x3_1, ..., x3_P]."""

    def __init__(self, augment: torch.nn.Module, third_view: str | None, positives=None, seed: int = 0,
                 positives_on_device: bool = True, second_augment: torch.nn.Module | None = None,
                 class_mates: ClassMates | None = None, per_step: int = 1) -> None:
        self.augment, self.third_view, self.positives, self.seed = augment, third_view, positives, seed
        self.second_augment = augment if second_augment is None else second_augment
        self.positives_on_device = positives_on_device  # False: a store too big for the device stays memory-mapped
        self.class_mates, self.per_step = class_mates, per_step

    @property
    def n_views(self) -> int:
        return 2 if self.third_view is None else 2 + self.per_step

    def to(self, device: torch.device) -> "ViewMaker":
        same = self.second_augment is self.augment
        self.augment = self.augment.to(device)
        self.second_augment = self.augment if same else self.second_augment.to(device)
        if self.positives is not None and self.positives_on_device:
            self.positives = self.positives.to(device)
        if self.class_mates is not None:
            self.class_mates = self.class_mates.to(device)
        return self

    def __call__(self, images: Tensor, indices: Tensor, step: int, rank: int) -> list[Tensor]:
        sources = [(self.augment, images), (self.second_augment, images)]
        if self.third_view == "synthetic":
            generator = self._rng(self.positives.device, step, rank, "candidates")
            candidates = self._candidates(indices.to(self.positives.device), generator)
            sources += [(self.augment, c.to(images.device, non_blocking=True)) for c in candidates]
        elif self.third_view == "augment":
            sources += [(self.augment, images)] * self.per_step
        elif self.third_view == "oracle":
            generator = self._rng(images.device, step, rank, "oracle")
            sources += [(self.augment, self.class_mates(indices, generator)) for _ in range(self.per_step)]
        return augment_together(sources)

    def _candidates(self, indices: Tensor, generator: torch.Generator) -> list[Tensor]:
        """P candidates per index, drawn without replacement from its K (one uniform draw when P = 1)."""
        if self.per_step == 1:
            return [self.positives.sample(indices, generator=generator)]
        every = self.positives.candidates(indices)                                      # (B, K, H, W, C)
        order = torch.rand(every.shape[:2], device=every.device, generator=generator).argsort(1)
        slots = order[:, :self.per_step]
        picked = every[torch.arange(len(every), device=every.device)[:, None], slots]   # (B, P, H, W, C)
        return list(picked.unbind(1))

    def _rng(self, device: torch.device, step: int, rank: int, stream: str) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(step_seed(self.seed, step, rank, stream))


def augment_together(sources: list[tuple[torch.nn.Module, Tensor]]) -> list[Tensor]:
    """augment(images) for each (augment, images), in order; sources with the same augment and image
    shape share one call on their concatenation (fewer, larger kernels)."""
    groups: dict[tuple, list[int]] = {}
    for i, (augment, images) in enumerate(sources):
        groups.setdefault((id(augment), tuple(images.shape[1:])), []).append(i)
    views: list[Tensor | None] = [None] * len(sources)
    for members in groups.values():
        augment = sources[members[0]][0]
        outputs = augment(torch.cat([sources[i][1] for i in members])).chunk(len(members))
        for i, out in zip(members, outputs):
            views[i] = out
    return views  # type: ignore[return-value]
