"""The GPU path: bf16 autocast and channels_last in the sampler and in training (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from clsp.diffusion.sampler import SamplerConfig, generate_positives, sample

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", ["ddim", "dpmsolver++"])
def test_w1_is_bit_exact_on_gpu(tiny_unet, schedule, digit_anchors, name):
    torch.backends.cudnn.benchmark = False
    cfg = SamplerConfig(sampler=name, steps=5, w=1.0, batch_size=8)
    plain = sample(tiny_unet, schedule, 8, cfg, seed=1, device="cuda")
    positives = generate_positives(tiny_unet, schedule, digit_anchors, 2, cfg, seed=1, device="cuda")
    assert torch.equal(positives.reshape(8, 8, 8, 1), plain)
    other = generate_positives(tiny_unet, schedule, digit_anchors, 2, SamplerConfig(sampler=name, steps=5, w=0.0), seed=1,
                               device="cuda")
    assert not torch.equal(other, positives)


def test_bf16_training_on_gpu(tmp_path):
    from clsp.config import load_config
    from clsp.diffusion.cli import resolve_train_preset
    from clsp.diffusion.model import load_model
    from clsp.diffusion.train import DiffusionTrainConfig, train_diffusion

    cfg = load_config(DiffusionTrainConfig, resolve_train_preset("tiny-digits"), [
        f"out_dir={tmp_path}", "trainer.accelerator=gpu", "trainer.precision=auto", "trainer.deterministic=false",
        "trainer.progress=false", "max_steps=20", "sample_every=20", "n_sample_grid=4", "sample_steps=5"])
    unet, _ = load_model(train_diffusion(cfg))
    assert all(torch.isfinite(p).all() for p in unet.parameters())
    assert (tmp_path / "samples" / "step00000020.png").is_file()
