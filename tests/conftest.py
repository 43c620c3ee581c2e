"""Shared test setup: CPU-sized threads, the gpu marker, and Fashion-MNIST availability."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("CLSP_QUIET", "1")


def pytest_configure(config):
    """Two intra-op threads on the 2-core CI machine; OMP_NUM_THREADS, when set, wins (on a machine shared with
    other jobs, 2 OpenMP threads spin-wait against them and run many times slower than 1)."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, os.cpu_count() or 1))))


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marked gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def fashion_mnist_or_skip(split: str = "train"):
    """Load Fashion-MNIST or skip with the reason printed (never silently)."""
    from clsp.data import load_dataset
    from clsp.errors import UserError

    try:
        return load_dataset("fashion-mnist", split, download=False)
    except UserError as e:
        print(f"SKIP reason: {e}")
        pytest.skip(f"Fashion-MNIST unavailable: {e}")


@pytest.fixture(scope="session")
def fashion_mnist():
    return fashion_mnist_or_skip("train")


@pytest.fixture(scope="session")
def digits():
    from clsp.data import load_dataset

    return load_dataset("digits", "train")
