"""Every shipped preset resolves and validates (pipeline, diffusion, synthesis), and the paper presets hold
the release's settings: the sampler's timesteps everywhere, STL-10 as the release runs it."""

from __future__ import annotations

import pytest

from clsp.config import CONFIG_DIR, load_config
from clsp.diffusion.train import DiffusionTrainConfig
from clsp.pipeline import Pipeline, PipelineConfig, synthesize_config
from clsp.positives.synthesize import SynthesizeConfig

PIPELINE_PRESETS = sorted(CONFIG_DIR.glob("*.yaml"))
DIFFUSION_PRESETS = sorted((CONFIG_DIR / "diffusion").glob("*.yaml"))
SYNTHESIZE_PRESETS = sorted((CONFIG_DIR / "synthesize").glob("*.yaml"))


@pytest.mark.parametrize("preset", PIPELINE_PRESETS, ids=lambda p: p.stem)
def test_every_pipeline_preset_plans_and_samples_at_the_releases_timesteps(preset, tmp_path):
    cfg = load_config(PipelineConfig, preset, [f"out_dir={tmp_path / 'run'}"])
    plan = Pipeline(cfg)                                  # composes and validates every stage's config
    assert plan.runs and cfg.synthesis.sampler.timestep_spacing == "trailing"


@pytest.mark.parametrize("preset", DIFFUSION_PRESETS, ids=lambda p: p.stem)
def test_every_diffusion_preset_loads(preset):
    from clsp.diffusion.unet import PRESETS

    assert load_config(DiffusionTrainConfig, preset).model in PRESETS


@pytest.mark.parametrize("preset", SYNTHESIZE_PRESETS, ids=lambda p: p.stem)
def test_every_synthesize_preset_loads_with_the_releases_sampler(preset):
    s = load_config(SynthesizeConfig, preset, ["model=m", "out_dir=o"]).sampler
    if "conditional" in preset.stem:        # the release's conditional DDIM: its own class, guidance 1.8, eta 1, no interpolation
        steps = 20 if preset.stem.startswith("fashion-mnist-16") else 100
        assert (s.sampler, s.steps, s.eta, s.w, s.timestep_spacing, s.guidance) == ("ddim", steps, 1.0, 1.0, "trailing", 1.8)
    else:
        assert (s.sampler, s.steps, s.eta, s.w, s.timestep_spacing, s.clip_x0, s.guidance) == \
            ("ddim", 100, 0.1, 0.1, "trailing", False, None)


def test_the_conditional_diffusion_presets_follow_the_release():
    """configs/conditional_diffusion_cifar10.yaml and train_conditional_diffusion.py of the release."""
    for name, dataset in (("cifar10-conditional", "cifar10"), ("cifar100-conditional", "cifar100")):
        d = load_config(DiffusionTrainConfig, CONFIG_DIR / "diffusion" / f"{name}.yaml")
        assert (d.dataset.name, d.model, d.conditional, d.label_dropout, d.dropout, d.lr, d.beta_end) == \
            (dataset, "ddpm-cifar10", True, 0.1, 0.15, 2.5e-4, 0.028)
        assert (d.batch_size, d.warmup_steps, d.grad_clip, d.ema_decay, d.max_steps) == (128, 5000, 1.0, 0.9999, 390000)
    demo = load_config(DiffusionTrainConfig, CONFIG_DIR / "diffusion" / "fashion-mnist-16-conditional.yaml")
    assert (demo.model, demo.dataset.size, demo.conditional, demo.init_from) == ("mini", 16, True, "clsp:fashion-mnist-16")


def test_stl10_runs_as_the_release(tmp_path):
    """The 100k unlabeled split everywhere, the release's 64 px diffusion layout, candidates at 64 px,
    1000 epochs of 64 px views cropped from the 96 px images."""
    from clsp.diffusion.unet import PRESETS

    cfg = load_config(PipelineConfig, CONFIG_DIR / "stl10.yaml", [f"out_dir={tmp_path / 'run'}"])
    plan = Pipeline(cfg)
    assert (cfg.dataset.name, cfg.dataset.size, cfg.dataset.train_split) == ("stl10", 64, "unlabeled")

    d = plan.diffusion
    assert (d.model, d.dropout, d.lr, d.batch_size, d.dataset.train_split, d.dataset.size) == \
        ("ddpm-stl10", 0.15, 5e-5, 20, "unlabeled", 64)
    unet = PRESETS["ddpm-stl10"]
    assert unet.block_out_channels == (192, 384, 576, 768)                    # base 192, multipliers 1, 2, 3, 4
    attention = [i for i, t in enumerate(unet.down_block_types) if t.startswith("Attn")]
    assert attention == [1, 2] and unet.layers_per_block == 2 and unet.dropout == 0.15
    assert load_config(DiffusionTrainConfig, CONFIG_DIR / "diffusion" / "stl10.yaml").model == "ddpm-stl10"

    synth = synthesize_config(cfg, plan.model_dir, plan.store)
    assert (synth.dataset.size, synth.split, synth.k) == (64, "unlabeled", 8)     # candidates at 64 px
    standalone = load_config(SynthesizeConfig, CONFIG_DIR / "synthesize" / "stl10.yaml", ["model=m", "out_dir=o"])
    assert (standalone.dataset.name, standalone.dataset.size, standalone.split) == ("stl10", 64, "unlabeled")

    for pre in plan.runs.values():
        assert (pre.epochs, pre.crop_source_size, pre.dataset.size, pre.dataset.train_split) == (1000, 96, 64, "unlabeled")
        assert pre.backbone.stem == "stl" and pre.augment in ("simclr", "moco")
    from clsp.methods.pretrain import PretrainConfig

    for name in ("stl10-simclr-clsp", "stl10-moco-clsp"):
        pre = load_config(PretrainConfig, CONFIG_DIR / "pretrain" / f"{name}.yaml")
        assert (pre.epochs, pre.crop_source_size, pre.dataset.size, pre.dataset.train_split) == (1000, 96, 64, "unlabeled")
