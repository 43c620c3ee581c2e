"""Report fixtures: headless Chromium (skipped with a printed reason when it is not installed)."""

from __future__ import annotations

import pytest

from report_helpers import find_chromium


@pytest.fixture(scope="session")
def chromium():
    path = find_chromium()
    if path is None:
        reason = "headless Chromium not installed (Debian package `chromium`); the report's browser test is skipped"
        print(f"SKIP reason: {reason}")
        pytest.skip(reason)
    return path
