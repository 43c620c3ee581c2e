"""Class-conditional diffusion with classifier-free guidance as a source of positives (issue 17): the guided
prediction, label dropout, g = 0 against a plain conditional loop, the refusals, and a tiny model from training
to a store that `clsp eval positives` reads."""

from __future__ import annotations

import json

import pytest
import torch

from clsp.diffusion import sampler as sampler_module
from clsp.diffusion.sampler import SamplerConfig, generate_positives, sample, to_uint8
from clsp.diffusion.schedulers import make_scheduler, step_kwargs
from clsp.errors import UserError

CLASSES = 3


@pytest.fixture
def conditional_unet():
    """The tiny preset with a class table (3 classes + null), every parameter randomised (see perturbed_tiny_unet)."""
    from clsp.diffusion.unet import make_unet

    torch.manual_seed(5)
    unet = make_unet("tiny", 8, channels=1, num_classes=CLASSES)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet.eval()


def recorded_steps(monkeypatch) -> list:
    """(eps, t, x) of every scheduler step the sampler takes."""
    calls = []
    make = sampler_module.make_scheduler

    def recording(*args, **kwargs):
        scheduler = make(*args, **kwargs)
        step = scheduler.step
        scheduler.step = lambda eps, t, x, **kw: calls.append((eps.clone(), t, x.clone())) or step(eps, t, x, **kw)
        return scheduler
    monkeypatch.setattr(sampler_module, "make_scheduler", recording)
    return calls


def test_the_guided_prediction_is_one_plus_g_class_minus_g_null(conditional_unet, schedule, monkeypatch):
    calls = recorded_steps(monkeypatch)
    labels, g = torch.tensor([0, 2, 1, 2]), 1.8
    sample(conditional_unet, schedule, 4, SamplerConfig(steps=3, guidance=g), seed=1, class_labels=labels)
    assert len(calls) == 3
    with torch.no_grad():
        for eps, t, x in calls:
            by_class = conditional_unet(x, t, class_labels=labels).sample
            by_null = conditional_unet(x, t, class_labels=torch.full((4,), CLASSES)).sample
            torch.testing.assert_close(eps, (1 + g) * by_class - g * by_null, rtol=1e-5, atol=1e-5)
            assert (by_class - by_null).abs().max() > 1e-3                       # the two branches differ


@pytest.mark.parametrize("name", ["ddim", "ddpm", "dpmsolver++", "unipc"])
def test_g0_is_plain_conditional_sampling_bit_for_bit(conditional_unet, schedule, name):
    """An independent loop: diffusers' scheduler stepping eps(x, c), the same noise stream and memory layout."""
    labels, seed, steps = torch.tensor([1, 0, 2, 1, 0]), 4, 4
    cfg = SamplerConfig(sampler=name, steps=steps, eta=0.5, guidance=0.0)
    mine = sample(conditional_unet, schedule, 5, cfg, seed=seed, class_labels=labels)

    unet = conditional_unet.to(memory_format=torch.channels_last)
    scheduler = make_scheduler(schedule, name, steps)
    stream = torch.Generator().manual_seed(seed)
    x = torch.randn((5, 1, 8, 8), generator=stream).contiguous(memory_format=torch.channels_last)
    kwargs = step_kwargs(name, 0.5, stream)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t, class_labels=labels).sample, t, x, **kwargs).prev_sample
    assert torch.equal(mine, to_uint8(x))
    guided_run = sample(conditional_unet, schedule, 5, SamplerConfig(sampler=name, steps=steps, eta=0.5, guidance=1.8),
                        seed=seed, class_labels=labels)
    assert not torch.equal(guided_run, mine)


def test_positives_sample_each_anchors_class_and_guidance_combines_with_interpolation(conditional_unet, schedule,
                                                                                     digit_anchors, monkeypatch):
    labels = torch.tensor([2, 0, 1])
    cfg = SamplerConfig(steps=3, w=1.0, guidance=1.8)
    positives = generate_positives(conditional_unet, schedule, digit_anchors[:3], 2, cfg, seed=3, anchor_labels=labels)
    plain = sample(conditional_unet, schedule, 6, cfg, seed=3, class_labels=labels.repeat_interleave(2))
    assert torch.equal(positives.reshape(6, 8, 8, 1), plain)                # w = 1: candidate j of anchor b is its class's sample

    seen = []                                                               # the class inputs of the anchor passes
    original = sampler_module.anchor_path
    monkeypatch.setattr(sampler_module, "anchor_path",
                        lambda u, x, t, k, y=None: seen.append(y.tolist()) or original(u, x, t, k, y))
    mixed = generate_positives(conditional_unet, schedule, digit_anchors[:3], 2, SamplerConfig(steps=3, w=0.1, guidance=1.8),
                               seed=3, anchor_labels=labels)
    assert not torch.equal(mixed, positives)
    assert seen[:2] == [[2, 2, 0, 0, 1, 1], [CLASSES] * 6] and len(seen) == 6   # per step: the class branch, the null branch


def test_guidance_without_a_conditional_model_and_a_conditional_model_without_labels_are_refused(
        tiny_unet, conditional_unet, schedule, digit_anchors):
    with pytest.raises(UserError, match="guidance = 1.8 needs a class-conditional diffusion model"):
        sample(tiny_unet, schedule, 2, SamplerConfig(steps=2, guidance=1.8), seed=0)
    with pytest.raises(UserError, match="guidance = 1.8 needs a class-conditional diffusion model"):
        generate_positives(tiny_unet, schedule, digit_anchors[:2], 2, SamplerConfig(steps=2, guidance=1.8), seed=0)
    with pytest.raises(UserError, match="anchors need labels"):
        generate_positives(conditional_unet, schedule, digit_anchors[:2], 2, SamplerConfig(steps=2, guidance=1.8), seed=0)
    with pytest.raises(UserError, match="class labels must be in 0 .. 2"):
        generate_positives(conditional_unet, schedule, digit_anchors[:2], 2, SamplerConfig(steps=2), seed=0,
                           anchor_labels=torch.tensor([1, 7]))


def test_label_dropout_hits_its_rate_and_keeps_the_other_labels():
    from clsp.diffusion.train import drop_labels

    torch.manual_seed(0)
    labels = torch.randint(0, 10, (200_000,))
    dropped = drop_labels(labels, 0.15, 10)
    null = dropped == 10
    assert abs(null.float().mean().item() - 0.15) < 0.004                 # std of the rate: 0.0008
    assert torch.equal(dropped[~null], labels[~null])
    assert abs(null[labels == 3].float().mean().item() - 0.15) < 0.012     # every class alike
    assert not drop_labels(labels, 0.0, 10).eq(10).any()


def test_an_unconditional_init_gets_a_zero_class_table_and_predicts_as_before(saved_tiny_model):
    from clsp.diffusion.model import load_model
    from clsp.diffusion.train import with_classes

    unet, _ = load_model(saved_tiny_model)
    conditional = with_classes(unet, 10, str(saved_tiny_model)).eval()
    assert conditional.config.num_class_embeds == 11
    x, t = torch.randn(3, 1, 8, 8), torch.tensor(500)
    with torch.no_grad():
        torch.testing.assert_close(conditional(x, t, class_labels=torch.tensor([0, 4, 10])).sample, unet(x, t).sample)
    with pytest.raises(UserError, match="class-conditional with 10 classes"):
        with_classes(conditional, 3, "m")


def test_a_tiny_conditional_model_trains_saves_reloads_and_makes_a_store_eval_positives_reads(tmp_path, monkeypatch, capsys):
    from clsp.cli import main
    from clsp.config import load_config
    from clsp.diffusion.cli import resolve_train_preset
    from clsp.diffusion.model import load_model
    from clsp.diffusion.train import DiffusionTrainConfig, train_diffusion
    from clsp.positives.store import PositivesStore

    monkeypatch.setenv("CLSP_DATA_ROOT", str(tmp_path / "cache"))
    cfg = load_config(DiffusionTrainConfig, resolve_train_preset("tiny-digits"),
                      [f"out_dir={tmp_path / 'run'}", "trainer.progress=false", "dataset.size=8", "conditional=true",
                       "label_dropout=0.2", "beta_end=0.028", "max_steps=3", "sample_every=3", "n_sample_grid=4",
                       "sample_steps=2"])
    model_dir = train_diffusion(cfg)
    unet, scheduler_config = load_model(model_dir)
    assert unet.config.num_class_embeds == 11 and scheduler_config["beta_end"] == 0.028
    assert (tmp_path / "run" / "samples" / "step00000003.png").is_file()

    common = ["--dataset", "digits", "--size", "8", "--subset", "40"]
    assert main(["synthesize", "--model", str(model_dir), *common, "--k", "2", "--guidance", "1.8", "sampler.w=1.0",
                 "sampler.steps=2", "chunk_size=20", "--out", str(tmp_path / "store"), "--device", "cpu"]) == 0
    store = PositivesStore.open(tmp_path / "store")
    assert store.candidates(torch.arange(40)).shape == (40, 2, 8, 8, 1)
    assert store.manifest["generation"]["sampler"]["guidance"] == 1.8
    assert main(["eval", "positives", "--positives", str(tmp_path / "store"), *common, "--n", "20",
                 "--out", str(tmp_path / "eval")]) == 0
    results = json.loads((tmp_path / "eval" / "metrics.json").read_text())["results"]
    assert results["store"]["n_anchors"] == 20 and 0 <= results["store"]["agreement"] <= 100


def test_conditional_training_refuses_data_without_labels(tmp_path):
    import numpy as np
    from PIL import Image

    from clsp.config import load_config
    from clsp.diffusion.cli import resolve_train_preset
    from clsp.diffusion.train import DiffusionTrainConfig, train_diffusion

    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(20):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (16, 16), dtype=np.uint8)).save(flat / f"{i}.png")
    cfg = load_config(DiffusionTrainConfig, resolve_train_preset("tiny-digits"),
                      [f"out_dir={tmp_path / 'run'}", f"dataset.name=folder:{flat}", "conditional=true"])
    with pytest.raises(UserError, match="conditional=true trains on the class labels, but folder:.* has none"):
        train_diffusion(cfg)
    assert not (tmp_path / "run" / "config.yaml").exists()
