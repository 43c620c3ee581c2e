"""Stage 1: an unconditional DDPM on the training images (PAPER.md), with Lightning.

    x_0 ~ data (random horizontal flip),  t ~ U{0..T-1},  eps ~ N(0, I)
    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                (DDPMScheduler.add_noise)
    L   = || eps - eps_theta(x_t, t) ||^2                         (epsilon prediction, plain MSE)

Adam with linear warmup, grad-norm clipping, and an EMA of the weights (the EMA weights are what gets
saved and sampled) whose decay warms up as min(decay, (1 + n) / (10 + n)) after n updates: a constant
decay from the first update keeps decay^n of the random initialisation in the average (0.999 after
1000 steps: 37%), which made every short run sample noise; with the warm-up the initialisation's
share is below 1e-3 after 1000 steps, and long runs (decay reached after ~10 / (1 - decay) steps)
are unchanged.

With `conditional: true` the UNet is class-conditional (classifier-free guidance, Ho & Salimans 2022):
    c = y with probability 1 - p, else the null class C      (label dropout, per image, p = label_dropout)
    L = || eps - eps_theta(x_t, t, c) ||^2
so one network learns both eps(x, c) and the unconditional eps(x, null) that guided sampling combines.
The release drops the labels of a whole batch at once with probability 0.1; dropping per image gives
each batch both kinds of target, the standard recipe, at the same rate. The dataset lives on the device as
uint8; each step's batch and randomness derive from (seed, global step, rank), so a run killed and
resumed from its last checkpoint replays exactly what an uninterrupted run does.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from clsp.config import check
from clsp.diffusion.config import DiffusionTrainConfig
from clsp.diffusion.schedulers import TRAINING_SCHEDULE
from clsp.errors import UserError

log = logging.getLogger("clsp.diffusion")


def sample_grid_size(cfg: DiffusionTrainConfig) -> tuple[int, int]:
    """(images, DDIM steps) of each sample grid, scaled to the run: all grids together cost at most about
    5% of training. A grid is images x steps UNet forwards; training is about 3 forward-equivalents
    (forward and backward) per image of every step. Never below 16 images and 10 steps (unless asked)."""
    grids = cfg.max_steps // cfg.sample_every + 1
    budget = 0.05 * 3 * cfg.batch_size * cfg.max_steps / grids          # UNet forwards per grid
    images = min(cfg.n_sample_grid, max(16, int(budget // 10)))
    steps = min(cfg.sample_steps, max(10, int(budget // max(1, images))))
    return images, steps


# -- the objective ---------------------------------------------------------------------------------

def random_flip(x: torch.Tensor) -> torch.Tensor:
    """Flip each image of a (B, C, H, W) batch horizontally with probability 1/2 (torch's global RNG)."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def diffusion_loss(unet, noise_schedule, x0: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """The DDPM objective on a batch x0 in [-1, 1]: MSE between the noise and its prediction (at
    `class_labels` for a class-conditional UNet)."""
    noise = torch.randn_like(x0)
    t = torch.randint(0, noise_schedule.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
    x_t = noise_schedule.add_noise(x0, noise, t)
    return F.mse_loss(unet(x_t, t, class_labels=class_labels).sample.float(), noise.float())


def drop_labels(labels: torch.Tensor, rate: float, null_class: int) -> torch.Tensor:
    """Each label replaced by the null class with probability `rate` (torch's global RNG), independently."""
    return torch.where(torch.rand(labels.shape, device=labels.device) < rate, null_class, labels)


def ema_decay_at(decay: float, updates: int) -> float:
    """The EMA decay of the update that follows `updates` earlier ones: min(decay, (1 + n) / (10 + n))."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


# -- Lightning -------------------------------------------------------------------------------------

def _lightning_module():
    import lightning as L
    from torch.optim.swa_utils import AveragedModel

    from clsp.diffusion.sampler import SamplerConfig, null_class, sample, to_unit_range
    from clsp.diffusion.schedulers import training_scheduler
    from clsp.grids import image_grid, save_png
    from clsp.training import ResidentBatches, step_seed

    class DiffusionModule(L.LightningModule):
        """The UNet, its EMA (in the checkpoint, never trained), and the device-resident images."""

        def __init__(self, cfg: DiffusionTrainConfig, unet, scheduler_config: dict, data: ResidentBatches) -> None:
            super().__init__()
            self.cfg, self.scheduler_config = cfg, scheduler_config
            self.unet = unet
            self.ema = AveragedModel(unet, multi_avg_fn=self._ema_update, use_buffers=True)
            self.ema.requires_grad_(False)
            self._ema_decay = cfg.ema_decay
            self.noise_schedule = training_scheduler(scheduler_config)
            self.data = data                         # uint8 images (and the labels of a conditional run)
            self.grid_images, self.grid_steps = sample_grid_size(cfg)

        def on_fit_start(self) -> None:
            self.data.to(self.device)

        def training_step(self, batch, batch_idx):
            _, images, labels = batch                     # this step's, on the device (ResidentBatches)
            step, rank = self.global_step, self.global_rank
            torch.manual_seed(step_seed(self.cfg.seed, step, rank, "diffusion"))   # flip, t, noise, dropout
            x0 = to_unit_range(images)
            if self.device.type == "cuda":
                x0 = x0.contiguous(memory_format=torch.channels_last)
            x0 = random_flip(x0)
            if labels is not None:
                labels = drop_labels(labels, self.cfg.label_dropout, null_class(self.unet))
            loss = diffusion_loss(self.unet, self.noise_schedule, x0, labels)
            self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
            return loss

        def optimizer_step(self, *args, **kwargs) -> None:
            super().optimizer_step(*args, **kwargs)
            # decay from the host's step count (the AveragedModel's own count is a device tensor: reading it syncs);
            # the first update (step 0) copies the weights
            self._ema_decay = ema_decay_at(self.cfg.ema_decay, self.global_step)
            self.ema.update_parameters(self.unet)         # before any checkpoint of this step is written

        def _ema_update(self, ema_params, params, num_averaged) -> None:
            torch._foreach_lerp_(ema_params, params, 1.0 - self._ema_decay)

        def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
            step = self.global_step
            if step % self.cfg.trainer.log_every == 0 and not torch.isfinite(outputs["loss"]):
                raise UserError(f"the diffusion loss is not finite at step {step}; lower lr or check the data")
            if self.trainer.is_global_zero and self.grid_images and (
                    step % self.cfg.sample_every == 0 or step == self.cfg.max_steps):
                self.save_sample_grid(step)

        def save_sample_grid(self, step: int) -> Path:
            """A grid from the EMA weights with a fixed seed, so that grids show the model's progress."""
            sampler = SamplerConfig(sampler="ddim", steps=self.grid_steps, eta=0.0, batch_size=self.cfg.batch_size)
            classes = None                            # a conditional model: every class in turn, without guidance
            if self.data.labels is not None:
                classes = torch.arange(self.grid_images) % null_class(self.ema.module)
            images = sample(self.ema.module, self.scheduler_config, self.grid_images, sampler, self.cfg.seed, self.device,
                            class_labels=classes)
            path = Path(self.cfg.out_dir) / "samples" / f"step{step:08d}.png"
            save_png(path, image_grid(images, ncols=math.ceil(math.sqrt(len(images)))))
            return path

        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.unet.parameters(), lr=self.cfg.lr, fused=self.device.type == "cuda")
            warmup = max(1, self.cfg.warmup_steps)
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    return DiffusionModule


def check_batch_fits(cfg: DiffusionTrainConfig, unet, channels: int, size: int) -> None:
    """Refuse, before the first step, a batch whose UNet activations cannot fit in memory (clsp.memory)."""
    from clsp.memory import activation_bytes_per_image, check_step_fits
    from clsp.training import precision, uses_gpu

    def forward(x):
        steps = torch.zeros(len(x), dtype=torch.long)
        labels = steps if getattr(unet.config, "num_class_embeds", None) else None
        return unet(x, steps, class_labels=labels).sample

    per_image = activation_bytes_per_image([unet], forward, torch.zeros(2, channels, size, size))
    check_step_fits(per_image, cfg.batch_size, "cuda" if uses_gpu(cfg.trainer) else "cpu", "batch_size", cfg.batch_size,
                    precision(cfg.trainer))


def with_classes(unet, num_classes: int, source: str):
    """The init model as the run needs it: unchanged when its class table fits `num_classes` (0: none); an
    unconditional model given a new class table of num_classes + 1 entries initialised to zero, so that
    fine-tuning starts from exactly the unconditional model for every class."""
    from diffusers import UNet2DModel

    have = int(unet.config.num_class_embeds or 0)
    if have == (num_classes + 1 if num_classes else 0):
        return unet
    if have:
        raise UserError(f"init_from {source} is class-conditional with {have - 1} classes (+ null); this run needs "
                        + (f"{num_classes}" if num_classes else "an unconditional model (conditional=false)"))
    conditional = UNet2DModel.from_config({**unet.config, "num_class_embeds": num_classes + 1})
    missing, unexpected = conditional.load_state_dict(unet.state_dict(), strict=False)
    assert missing == ["class_embedding.weight"] and not unexpected, (missing, unexpected)
    with torch.no_grad():
        conditional.class_embedding.weight.zero_()
    return conditional


# -- the stage function ----------------------------------------------------------------------------

def train_diffusion(cfg: DiffusionTrainConfig) -> Path:
    """Train (or resume, or skip if already done) and return the diffusers model directory.
    One process at a time per out_dir."""
    from clsp.lock import run_lock

    with run_lock(cfg.out_dir):
        return _train_diffusion(cfg)


def _train_diffusion(cfg: DiffusionTrainConfig) -> Path:
    from lightning.pytorch.utilities import rank_zero_only

    from clsp import rundir
    from clsp.data.config import load_split
    from clsp.diffusion.model import check_model_matches, load_model, resolve_model_dir, save_model
    from clsp.diffusion.unet import check_image_size, make_unet
    from clsp.io import hash_directory, remove_temporaries
    from clsp.loggers import require_packages
    from clsp.training import (ResidentBatches, apply_threads, checkpoint_step, fit, last_checkpoint, make_trainer, uses_gpu,
                               world_size)

    require_packages(cfg.trainer)                               # a logger's package, before any work
    apply_threads(cfg.trainer)
    out = Path(cfg.out_dir)
    model_dir = out / "model"
    train_set = load_split(cfg.dataset, cfg.dataset.train_split)
    if not train_set.resident:
        raise UserError(f"dataset '{cfg.dataset.name}' streams from disk; diffusion training needs an in-memory "
                        "dataset (resize it with dataset.size=... to one that fits)")
    inputs = {"dataset": train_set.fingerprint,
              "init_model": hash_directory(resolve_model_dir(cfg.init_from)) if cfg.init_from else "none"}
    stage = rundir.Stage(out, cfg, inputs, outputs=[model_dir.name])
    if stage.complete:
        log.info("diffusion: %s is complete for this config and data; reusing %s", out, model_dir)
        return model_dir
    if rank_zero_only.rank == 0 and out.is_dir():
        remove_temporaries(out)                                 # a model directory a kill left half-written
    resume = last_checkpoint(out)
    if resume is not None and (out / "inputs.json").is_file() and stage.recorded_inputs() != inputs:
        raise UserError(f"{out} holds a diffusion run on other data or another init model; "
                        "choose another out_dir or delete it")
    world = world_size(cfg.trainer)
    if len(train_set) < cfg.batch_size * world:
        raise UserError(f"the dataset has {len(train_set)} images, fewer than one global batch "
                        f"({cfg.batch_size} x {world} devices); lower batch_size")

    num_classes = 0
    if cfg.conditional:
        if train_set.labels is None:
            raise UserError(f"conditional=true trains on the class labels, but {train_set.name} split "
                            f"'{train_set.split}' has none; use a labelled split (for a folder: one subfolder per class)")
        num_classes = len(train_set.classes)
    torch.manual_seed(cfg.seed)                                 # the same initial weights on every rank
    if cfg.init_from:
        unet, scheduler_config = load_model(cfg.init_from)
        check_model_matches(unet, train_set.image_size, train_set.channels)
        unet = with_classes(unet, num_classes, cfg.init_from)
        if cfg.dropout is not None:
            for m in unet.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.p = cfg.dropout
        unet.train()
    else:
        check_image_size(cfg.model, train_set.image_size)
        unet = make_unet(cfg.model, train_set.image_size, cfg.dropout, channels=train_set.channels, num_classes=num_classes)
        scheduler_config = dict(TRAINING_SCHEDULE, **({"beta_end": cfg.beta_end} if cfg.beta_end is not None else {}))

    if uses_gpu(cfg.trainer):                                   # before DDP wraps it and Adam holds its parameters
        unet.to(memory_format=torch.channels_last)

    check_batch_fits(cfg, unet, train_set.channels, train_set.image_size)
    if rank_zero_only.rank == 0:
        stage.start()
    labels = torch.from_numpy(train_set.labels).long() if cfg.conditional else None
    data = ResidentBatches(torch.from_numpy(train_set.images), labels, cfg.batch_size, cfg.seed)
    module = _lightning_module()(cfg, unet, scheduler_config, data)
    if cfg.trainer.compile and uses_gpu(cfg.trainer):
        unet.compile()                                          # after the EMA copy; state_dict keys unchanged
    trainer = make_trainer(cfg.trainer, out, max_steps=cfg.max_steps, gradient_clip_val=cfg.grad_clip)
    log.info("diffusion: %s UNet (%.1fM parameters) on %d images of %dpx, %d steps%s", cfg.model if not cfg.init_from else cfg.init_from,
             sum(p.numel() for p in unet.parameters()) / 1e6, len(train_set), train_set.image_size, cfg.max_steps,
             f", resuming from {resume}" if resume else "")
    fit(trainer, module, train_dataloaders=data.loader(world, checkpoint_step(resume)), ckpt_path=str(resume) if resume else None)
    if trainer.is_global_zero:
        save_model(model_dir, module.ema.module, scheduler_config)
        log.info("diffusion: EMA model -> %s", model_dir)
        stage.done({"model": str(model_dir), "steps": int(trainer.global_step)})
    return model_dir
