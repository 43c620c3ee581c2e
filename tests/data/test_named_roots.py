"""A --root that does not hold the set is an error, for Fashion-MNIST as for CIFAR-10: never a silent
fall back to another copy (the system's or the cache's)."""

from __future__ import annotations

import pytest

from clsp.data import load_dataset
from clsp.errors import UserError


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10"])
def test_a_named_root_without_the_set_is_an_error(tmp_path, name):
    nowhere = tmp_path / "nowhere"
    with pytest.raises(UserError, match=rf"not found.*{nowhere}"):
        load_dataset(name, "train", root=nowhere, download=False)
