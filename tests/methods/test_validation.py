"""Everything a user can get wrong stops before any training, with one message naming the key."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from methods_helpers import tiny_config

from clsp.config import CONFIG_DIR, load_config
from clsp.errors import ConfigError, UserError
from clsp.methods.pretrain import PretrainConfig, pretrain

PRESETS = sorted((CONFIG_DIR / "pretrain").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_loads_and_follows_the_paper(preset):
    cfg = load_config(PretrainConfig, preset)
    assert cfg.temperature == 0.2 or cfg.method == "all4one"
    if preset.stem.startswith(("cifar10-simclr", "cifar100-simclr", "cifar10-supcon", "cifar100-supcon")):
        assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.epochs, cfg.warmup_epochs) == (1024, 0.5, 1e-4, 1000, 10)
    if preset.stem.startswith(("cifar10-moco", "cifar100-moco")):
        assert (cfg.batch_size, cfg.lr, cfg.augment, cfg.moco.queue_size) == (512, 0.3, "moco", 32768)
    expected_lambda = {"cifar10-simclr-clsp": 1.0, "cifar100-simclr-clsp": 1.0, "cifar10-moco-clsp": 0.5,
                       "cifar100-moco-clsp": 0.2, "cifar10-supcon-clsp": 1.0, "cifar100-supcon-clsp": 1.0}
    assert (cfg.method == "supcon") == ("supcon" in preset.stem)
    if preset.stem in expected_lambda:
        assert cfg.clsp.weight == expected_lambda[preset.stem] and cfg.third_view == "synthetic"
        with pytest.raises(UserError, match="needs a positives store"):
            pretrain(cfg)                       # the store path is the pipeline's (or the user's) to set


@pytest.mark.parametrize("method, key", [("moco", "moco.queue_size"), ("nnclr", "nnclr.support_size"),
                                         ("all4one", "all4one.support_size")])
def test_queue_that_the_global_batch_does_not_divide(tmp_path, method, key):
    with pytest.raises(ConfigError, match=f"'{key}'.*global batch 16"):
        pretrain(tiny_config(tmp_path, f"method={method}", f"{key}=100"))
    assert not (tmp_path / "config.yaml").exists()


def test_negative_weight_and_unknown_keys(tmp_path):
    with pytest.raises(ConfigError, match="clsp.weight"):
        tiny_config(tmp_path, "clsp.weight=-0.5")
    with pytest.raises(ConfigError, match="unknown config key 'moco.queue'"):
        tiny_config(tmp_path, "moco.queue=64")
    with pytest.raises(ConfigError, match="third_view"):
        tiny_config(tmp_path, "clsp.third_view=mixup")


def test_store_that_does_not_match_the_dataset(tmp_path, digits_store):
    cfg = tiny_config(tmp_path / "run", "dataset.subset=48", "clsp.weight=1", f"clsp.positives={digits_store(16)}")
    with pytest.raises(UserError, match="was made for"):
        pretrain(cfg)
    with pytest.raises(UserError, match="not a positives store"):
        pretrain(tiny_config(tmp_path / "run", "clsp.weight=1", f"clsp.positives={tmp_path}"))
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_cli_says_one_line_and_exits_2(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CLSP_QUIET="1")
    result = subprocess.run([sys.executable, "-m", "clsp", "pretrain", "--config", "pretrain/demo", "method=moco",
                             "moco.queue_size=100", f"out_dir={tmp_path}"], capture_output=True, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clsp: error: config key 'moco.queue_size'"), result.stderr


@pytest.mark.parametrize("method, overrides, batch", [("simclr", [], 40), ("moco", ["moco.queue_size=96"], 32),
                                                       ("nnclr", ["nnclr.support_size=90"], 30)])
def test_a_batch_larger_than_the_training_split_follows_it_when_asked(tmp_path, method, overrides, batch):
    """40 training images, batch 64: the largest batch that fits (a divisor of the queue), lr scaled linearly."""
    from clsp.methods.pretrain import fit_batch_to_data

    cfg = tiny_config(tmp_path, f"method={method}", "batch_size=64", "lr=0.4", "warmup_start_lr=0.04",
                      "batch_follows_data=true", *overrides)
    fitted, line = fit_batch_to_data(cfg, 40, world=1)
    assert (fitted.batch_size, fitted.lr, fitted.warmup_start_lr) == (batch, pytest.approx(0.4 * batch / 64),
                                                                     pytest.approx(0.04 * batch / 64))
    assert line.startswith(f"40 training images are fewer than one batch of 64: batch_size {batch}")
    assert fit_batch_to_data(fitted, 40, world=1) == (fitted, None)          # fitted once: a rerun changes nothing
    with pytest.raises(UserError, match=r"has 40 training images, fewer than one batch \(batch_size=64 x 2 devices\); "
                                        rf"set batch_size to at most {batch // 2 if method != 'simclr' else 20}"):
        fit_batch_to_data(dataclasses.replace(cfg, batch_follows_data=False), 40, world=2)


def test_a_training_split_smaller_than_the_batch_is_refused_by_default(tmp_path):
    with pytest.raises(UserError, match=r"digits split 'train' has \d+ training images, fewer than one batch "
                                        r"\(batch_size=5000\); set batch_size to at most \d+, or batch_follows_data=true"):
        pretrain(tiny_config(tmp_path, "batch_size=5000"))
    assert not (tmp_path / "config.yaml").exists()
