"""The one configuration mechanism: presets, base chains, overrides, validation that names the key."""

from dataclasses import dataclass, field

import pytest

from clsp.config import check_positive, check_range, load_config, to_dict
from clsp.data.config import DatasetConfig
from clsp.errors import ConfigError
from clsp.training import TrainerConfig


@dataclass
class Inner:
    rate: float = 0.1

    def __post_init__(self):
        check_range(self.rate, "inner.rate", 0.0, 1.0)


@dataclass
class Schema:
    steps: int = 10
    name: str = "a"
    inner: Inner = field(default_factory=Inner)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)

    def __post_init__(self):
        check_positive(self.steps, "steps")


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_preset_and_overrides_merge_in_order(tmp_path):
    base = write(tmp_path, "base.yaml", "steps: 5\nname: base\n")
    child = write(tmp_path, "child.yaml", "base: base.yaml\nname: child\ninner:\n  rate: 0.5\n")
    cfg = load_config(Schema, child, ["inner.rate=0.25", "dataset.subset=100"])
    assert (cfg.steps, cfg.name, cfg.inner.rate, cfg.dataset.subset) == (5, "child", 0.25, 100)
    assert isinstance(cfg.inner, Inner)
    assert to_dict(cfg)["inner"] == {"rate": 0.25}


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="inner.rte"):
        load_config(Schema, None, ["inner.rte=0.3"])
    preset = write(tmp_path, "p.yaml", "stpes: 3\n")
    with pytest.raises(ConfigError, match="stpes"):
        load_config(Schema, preset)


def test_wrong_type_and_range_are_named():
    with pytest.raises(ConfigError, match="steps"):
        load_config(Schema, None, ["steps=many"])
    with pytest.raises(ConfigError, match="steps.*> 0"):
        load_config(Schema, None, ["steps=0"])
    with pytest.raises(ConfigError, match="inner.rate"):
        load_config(Schema, None, ["inner.rate=2"])
    with pytest.raises(ConfigError, match="dataset.subset"):
        load_config(Schema, None, ["dataset.subset=-1"])


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Schema, None, ["steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Schema, tmp_path / "nope.yaml")


def test_base_loop_is_reported(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(Schema, tmp_path / "a.yaml")


def test_trainer_config_validates_devices():
    with pytest.raises(ConfigError, match="trainer.devices"):
        load_config(TrainerConfig, None, ["devices=two"])
    assert load_config(TrainerConfig, None, ["devices='0,1'"]).devices == "0,1"
