"""Fixtures of the pretraining tests (helpers live in methods_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from methods_helpers import make_store


@pytest.fixture(scope="session")
def digits_store(tmp_path_factory):
    """store_for(subset) -> path of a store made for the digits train subset of that size."""
    from clsp.data.config import DatasetConfig, load_split

    stores: dict[int, Path] = {}

    def store_for(subset: int) -> Path:
        if subset not in stores:
            train = load_split(DatasetConfig(name="digits", subset=subset), "train")
            stores[subset] = make_store(tmp_path_factory.mktemp(f"store{subset}"), train)
        return stores[subset]

    return store_for
