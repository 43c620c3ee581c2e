"""Pipeline fixtures: the micro config (every stage on 64 digits at 16 px, a few steps each)."""

from __future__ import annotations

from pathlib import Path

import pytest

MICRO = Path(__file__).with_name("micro.yaml")


@pytest.fixture
def micro_config(tmp_path):
    """Load the micro pipeline config, writing into tmp_path/run, with extra key=value overrides."""
    from clsp.config import load_config
    from clsp.pipeline import PipelineConfig

    def load(*overrides: str):
        return load_config(PipelineConfig, MICRO, [f"out_dir={tmp_path / 'run'}", *overrides])

    return load
