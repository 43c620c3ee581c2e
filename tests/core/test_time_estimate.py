"""Before a long stage a few steps are timed and the rest of the stage estimated: in Lightning training (a
callback) and in synthesis (a short probe). The clock is faked so that the tests are timing-free."""

from __future__ import annotations

import time

import torch


def test_training_estimate_is_logged_after_a_few_steps(tmp_path, caplog):
    import lightning as L

    from clsp.training import TrainerConfig, make_trainer, time_estimate

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            return self.layer(batch).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    clock = iter([0.0, 57.0])  # read after the first step and 3 steps later: 19 s a step
    estimate = time_estimate(measured_steps=3, min_seconds=60, clock=lambda: next(clock))
    cfg = TrainerConfig(accelerator="cpu", progress=False, checkpoint_every=1000)
    trainer = make_trainer(cfg, tmp_path, max_steps=100, callbacks=[estimate])
    with caplog.at_level("INFO", logger="clsp"):
        trainer.fit(Tiny(), train_dataloaders=torch.utils.data.DataLoader(torch.randn(400, 2), batch_size=4))
    lines = [r.getMessage() for r in caplog.records if "steps took" in r.getMessage()]
    assert lines == ["training: 3 steps took 57.0 s (19.00 s a step); the remaining 96 steps will take about "
                     "30 min 24 s on this cpu"]


def test_synthesis_estimate_on_a_cpu(caplog, monkeypatch, digits):
    from clsp.diffusion.schedulers import TRAINING_SCHEDULE
    from clsp.diffusion.unet import make_unet
    from clsp.diffusion.sampler import SamplerConfig
    from clsp.positives.synthesize import SynthesizeConfig, estimate_on_cpu

    cfg = SynthesizeConfig(model="m", out_dir="o", k=4)
    clock = iter([0.0, 8.0])  # the probe (2 steps for 16 anchors) takes 8 s
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    with caplog.at_level("INFO", logger="clsp"):
        estimate_on_cpu(make_unet("tiny", 8, channels=1), dict(TRAINING_SCHEDULE), digits, cfg, images=1000)
    # 8 s / (16 images x 2 steps) = 0.25 s an image-step; 1000 images x 100 steps = 25000 s
    assert "synthesize: 2 steps for 16 images took 8.0 s; 1,000 images x 100 steps will take about 6 h 56 min" in caplog.text
    # a partial-noise start runs floor(s * steps) steps (the probe itself runs full steps, so any start fits it)
    caplog.clear()
    clock = iter([0.0, 8.0])
    with caplog.at_level("INFO", logger="clsp"):
        estimate_on_cpu(make_unet("tiny", 8, channels=1), dict(TRAINING_SCHEDULE), digits,
                        SynthesizeConfig(model="m", out_dir="o", k=4, sampler=SamplerConfig(start=0.3)), images=1000)
    assert "1,000 images x 30 steps will take about 2 h 05 min" in caplog.text
