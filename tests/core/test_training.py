"""Step-derived batches and seeds: what makes resume exact without saving RNG state."""

import numpy as np

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
