"""The diffusion model and the reference classifier clsp ships for the CPU demo: they load, they are what their
records say, and the model's positives keep their anchor's class far more often than chance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clsp.config import CONFIG_DIR, load_config
from clsp.diffusion.model import RECORD, load_model, resolve_model_dir, shipped_models
from clsp.diffusion.train import DiffusionTrainConfig
from clsp.diffusion.unet import make_unet

NAME = "fashion-mnist-16"


@pytest.fixture(scope="module")
def shipped():
    folder = resolve_model_dir(f"clsp:{NAME}")
    unet, scheduler_config = load_model(folder)
    return unet, scheduler_config, json.loads((folder / RECORD).read_text())


def test_the_shipped_model_is_the_recorded_run_of_the_committed_preset(shipped):
    unet, scheduler_config, record = shipped
    assert NAME in shipped_models() and "reference" not in shipped_models()
    preset = load_config(DiffusionTrainConfig, CONFIG_DIR / "diffusion" / f"{NAME}.yaml")
    recorded = record["config"]
    # The record is the preset's run: same data, network, recipe and length (out_dir and progress aside).
    for key in ("name", "size", "subset", "train_split"):
        assert recorded["dataset"][key] == getattr(preset.dataset, key), key
    assert recorded["dataset"]["size"] == 16 and recorded["dataset"]["subset"] == 0        # all 60k images
    for key in ("model", "batch_size", "lr", "warmup_steps", "ema_decay", "max_steps", "grad_clip", "seed"):
        assert recorded[key] == getattr(preset, key), key
    assert record["steps"] == recorded["max_steps"] == 8000
    assert record["command"].startswith(f"clsp diffusion train --config {NAME}")
    # The weights are the architecture the config names, grey, and load as float32.
    reference = make_unet(recorded["model"], 16, channels=1)
    def architecture(config) -> dict:          # JSON-normal form (lists, not tuples), bookkeeping keys aside
        return json.loads(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))

    assert architecture(unet.config) == architecture(reference.config)
    assert {k: v.shape for k, v in unet.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert record["parameters"] == sum(p.numel() for p in unet.parameters())
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in unet.parameters())
    assert scheduler_config["num_train_timesteps"] == 1000
    assert record["quality"]["agreement"] > 3 * record["quality"]["chance"]


def test_its_positives_keep_their_anchors_class_far_above_chance(shipped, fashion_mnist, monkeypatch, tmp_path):
    """An outcome, not a self-comparison: the shipped judge (no training here) classifies 48 candidates made at
    the demo's settings; chance is 10%, the record says ~43%. Plain samples (w = 1) of the same anchors
    agree only by chance: the anchor is what carries the class."""
    from clsp.data.config import DatasetConfig, load_split
    from clsp.diffusion.sampler import SamplerConfig, generate_positives
    from clsp.eval.reference import ReferenceConfig, reference_classifier

    unet, scheduler_config, _ = shipped
    monkeypatch.setenv("CLSP_DATA_ROOT", str(tmp_path))          # an empty cache: the judge must be the shipped one
    data = DatasetConfig(name="fashion-mnist", size=16)
    train, test = load_split(data, "train"), load_split(data, "test")
    judge = reference_classifier(train, test, ReferenceConfig())
    assert judge.test_accuracy > 85.0 and not (tmp_path / "reference").exists()    # loaded, not trained
    idx = np.random.default_rng(0).permutation(len(train))[:48]
    anchors, labels = torch.from_numpy(train.images[idx]), train.labels[idx]
    agreement = {}
    for w in (0.1, 1.0):
        cfg = SamplerConfig(steps=10, eta=0.1, w=w, layers=4)
        candidates = generate_positives(unet, scheduler_config, anchors, 1, cfg, seed=0)[:, 0].numpy()
        assert candidates.shape == (48, 16, 16, 1)
        agreement[w] = float((judge.predict(candidates)[0] == labels).mean())
    assert agreement[0.1] >= 0.3 and agreement[1.0] <= 0.25, agreement


def test_commands_sample_the_shipped_model_with_its_records_settings_unless_told_otherwise(tmp_path):
    from clsp.cli import resolve_config
    from clsp.diffusion.model import recommended_sampler

    recommended = recommended_sampler(f"clsp:{NAME}")
    assert recommended == {"layers": 4, "w": 0.1}      # layers = 1 ignores the anchor (agreement at chance)
    model = ["--model", f"clsp:{NAME}", "--out", str(tmp_path / "o")]
    for words in (["synthesize"], ["diffusion", "sample"]):
        s = resolve_config([*words, *model]).sampler
        assert (s.layers, s.w) == (4, 0.1), words
        s = resolve_config([*words, *model, "sampler.layers=2", "--w", "0.3"]).sampler
        assert (s.layers, s.w) == (2, 0.3), words      # a key=value or a flag still sets them
    preset = tmp_path / "mine.yaml"
    preset.write_text("sampler: {layers: 3}\n")
    assert resolve_config(["synthesize", "--config", str(preset), *model]).sampler.layers == 3   # and so does a preset
    s = resolve_config(["pipeline", "--config", "fashion-mnist", f"model_dir=clsp:{NAME}"]).synthesis.sampler
    assert (s.layers, s.w) == (4, 0.1)
    assert resolve_config(["synthesize", "--model", str(tmp_path), "--out", "o"]).sampler.layers == 1   # no record
