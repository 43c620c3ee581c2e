"""Step-derived batches and seeds: what makes resume exact without saving RNG state."""

import itertools

import numpy as np
import pytest

from clsp.training import epoch_batch_indices, step_seed


def test_epoch_batches_partition_each_epoch_across_ranks():
    n, b, world = 50, 4, 2
    per_epoch = n // (b * world)
    for epoch in range(2):
        seen = np.concatenate([epoch_batch_indices(n, b, epoch * per_epoch + s, seed=7, rank=r, world=world)
                               for s in range(per_epoch) for r in range(world)])
        assert len(seen) == len(set(seen.tolist())) == per_epoch * b * world  # no repeats within an epoch
    e0 = epoch_batch_indices(n, b, 0, seed=7)
    e1 = epoch_batch_indices(n, b, n // b, seed=7)
    assert not np.array_equal(e0, e1)  # a fresh permutation per epoch
    assert np.array_equal(e0, epoch_batch_indices(n, b, 0, seed=7))  # a pure function of the step


def test_step_seed_differs_by_step_rank_and_stream():
    seeds = {step_seed(0, s, r, st) for s in range(3) for r in range(2) for st in ("a", "b")}
    assert len(seeds) == 12
    assert step_seed(1, 2, 3, "x") == step_seed(1, 2, 3, "x")
    assert 0 <= step_seed(5, 5) < 2**63


def test_the_epoch_is_shuffled_once_not_at_every_step(monkeypatch):
    import clsp.training as training

    draws = []
    real = np.random.default_rng
    monkeypatch.setattr(training.np.random, "default_rng", lambda seed: draws.append(seed) or real(seed))
    training.epoch_permutation.cache_clear()
    batches = [epoch_batch_indices(1000, 10, step, seed=3) for step in range(100)]       # one epoch of 100 steps
    assert draws == [[3, 0]]
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(1000))
    first = batches[0][0]
    batches[0][0] = -1                                                # callers get their own copy, not the cached one
    assert epoch_batch_indices(1000, 10, 0, seed=3)[0] == first and len(draws) == 1


def _coded_set(n: int = 22):
    """Images whose pixels spell their own index, and labels that do too: a batch shows which images it holds."""
    import torch

    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 2, 2, 1).contiguous()
    return images, torch.arange(n, dtype=torch.int64) * 10


def _held(batch) -> list[int]:
    indices, images, labels = batch
    assert images[:, 0, 0, 0].tolist() == indices.tolist() and (labels // 10).tolist() == indices.tolist()
    return indices.tolist()


def test_resident_batches_resumed_at_a_step_are_those_of_the_uninterrupted_run():
    from clsp.training import ResidentBatches

    data = ResidentBatches(*_coded_set(22), batch_size=4, seed=5)            # 5 steps an epoch, 2 images left out
    loader = data.loader(world=1)
    straight = [_held(b) for _ in range(3) for b in loader]                  # three epochs, one iter() each
    assert len(straight) == 15
    for epoch in range(3):
        seen = sum(straight[5 * epoch: 5 * epoch + 5], [])
        assert len(set(seen)) == 20 and set(seen) <= set(range(22))          # whole batches, no image twice
    assert straight[:5] != straight[5:10]                                    # a fresh order each epoch
    for step in (0, 3, 5, 7, 14):
        resumed = data.loader(world=1, start_step=step)
        epochs_left = 3 - step // 5
        assert [_held(b) for _ in range(epochs_left) for b in resumed] == straight[step:]
        endless = data.from_step(step)
        assert [_held(next(endless)) for _ in range(15 - step)] == straight[step:]


def test_resident_batches_split_a_step_across_ranks():
    from clsp.training import ResidentBatches

    data = ResidentBatches(*_coded_set(22), batch_size=2, seed=5)
    one_rank = ResidentBatches(*_coded_set(22), batch_size=4, seed=5)
    for step in (0, 6):                                                      # 5 global steps of 4 an epoch
        ranks = [_held(next(data.from_step(step, rank, world=2))) for rank in (0, 1)]
        assert ranks[0] + ranks[1] == _held(next(one_rank.from_step(step)))


def test_resident_batches_are_on_the_device_of_their_images():
    import torch

    from clsp.training import ResidentBatches

    images, labels = _coded_set(22)
    data = ResidentBatches(images, labels, batch_size=4, seed=0).to("meta")   # a device without memory
    indices, batch, batch_labels = next(iter(data.loader(world=1)))
    assert {t.device.type for t in (indices, batch, batch_labels)} == {"meta"}
    assert (batch.dtype, batch.shape, batch_labels.dtype) == (torch.uint8, (4, 2, 2, 1), torch.int64)
    _, _, none = next(ResidentBatches(images, None, batch_size=4, seed=0).from_step(3))
    assert none is None


@pytest.mark.gpu
def test_resident_batches_on_the_gpu_are_the_cpu_batches():
    import torch

    from clsp.training import ResidentBatches

    cpu = ResidentBatches(*_coded_set(22), batch_size=4, seed=0)
    gpu = ResidentBatches(*_coded_set(22), batch_size=4, seed=0).to("cuda")
    for a, b in zip(itertools.islice(cpu.from_step(3), 6), itertools.islice(gpu.from_step(3), 6)):
        assert all(y.device.type == "cuda" and torch.equal(x, y.cpu()) for x, y in zip(a, b))
