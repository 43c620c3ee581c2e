"""An isolated clsp data cache for every data test (downloads and fingerprints.json stay in tmp)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """The clsp data cache (downloads, fingerprints.json) lives in the test's tmp dir."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CLSP_DATA_ROOT", str(cache))
    return cache
