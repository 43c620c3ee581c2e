"""Fixtures for the diffusion tests: a tiny UNet with non-trivial weights, its schedule, a saved model."""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import perturbed_tiny_unet


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on 2 cores shared with other jobs, 2 OpenMP threads run ~10x slower (spin waits),
    and subprocess runs (OMP_NUM_THREADS=1) must compute the same bits as in-process ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_unet():
    return perturbed_tiny_unet(8)


@pytest.fixture
def schedule():
    from clsp.diffusion.schedulers import TRAINING_SCHEDULE

    return dict(TRAINING_SCHEDULE)


@pytest.fixture
def digit_anchors():
    """Four real 8x8 digits as uint8 (4, 8, 8, 1)."""
    from clsp.data import load_dataset

    return torch.from_numpy(load_dataset("digits", "train").images[:4].copy())


@pytest.fixture
def saved_tiny_model(tmp_path, tiny_unet, schedule):
    from clsp.diffusion.model import save_model

    return save_model(tmp_path / "model", tiny_unet, schedule)
