"""Fixtures of the positives tests: small real anchors (digits)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits_small(digits):
    """The first 45 digits images (8x8): 45 is not a multiple of the chunk sizes the tests use."""
    return digits.subset(np.arange(45))
