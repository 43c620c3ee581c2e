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


class ViewMaker:
    """The views of a batch: two augmentations of each image and, when asked, a third view that is an
    augmented synthetic candidate (`synthetic`, CLSP) or a third augmentation of the image (`augment`,
    the paper's "+aug" control). The third view takes the first view's augmentation; `second_augment`
    (None: the same as `augment`) is the second view's, for asymmetric recipes. Views that share an
    augmentation and an image size are augmented in one call."""

    def __init__(self, augment: torch.nn.Module, third_view: str | None, positives=None, seed: int = 0,
                 positives_on_device: bool = True, second_augment: torch.nn.Module | None = None) -> None:
        self.augment, self.third_view, self.positives, self.seed = augment, third_view, positives, seed
        self.second_augment = augment if second_augment is None else second_augment
        self.positives_on_device = positives_on_device  # False: a store too big for the device stays memory-mapped

    @property
    def n_views(self) -> int:
        return 2 if self.third_view is None else 3

    def to(self, device: torch.device) -> "ViewMaker":
        same = self.second_augment is self.augment
        self.augment = self.augment.to(device)
        self.second_augment = self.augment if same else self.second_augment.to(device)
        if self.positives is not None and self.positives_on_device:
            self.positives = self.positives.to(device)
        return self

    def __call__(self, images: Tensor, indices: Tensor, step: int, rank: int) -> list[Tensor]:
        sources = [(self.augment, images), (self.second_augment, images)]
        if self.third_view == "synthetic":
            candidates = self.positives.sample(indices.to(self.positives.device), generator=self._candidate_rng(step, rank))
            sources.append((self.augment, candidates.to(images.device, non_blocking=True)))
        elif self.third_view == "augment":
            sources.append((self.augment, images))
        return augment_together(sources)

    def _candidate_rng(self, step: int, rank: int) -> torch.Generator:
        generator = torch.Generator(device=self.positives.device)
        return generator.manual_seed(step_seed(self.seed, step, rank, "candidates"))


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
