"""The diffusion commands' configs: DDPM training and the (interpolating) sampler. Torch-free, so that
--help, built from them, imports neither torch nor diffusers; the code they drive is in `train` and `sampler`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from clsp.config import added, check, check_choice, check_nonnegative, check_positive, check_range, field
from clsp.data.config import DatasetConfig
from clsp.diffusion.schedulers import SAMPLERS, TIMESTEP_SPACINGS
from clsp.training_config import TrainerConfig


@dataclass
class SamplerConfig:
    sampler: str = "ddim"             # ddim | ddpm | dpmsolver++ | unipc
    steps: int = 100                  # denoising steps (DDPM as trained: 1000)
    eta: float = 0.1                  # DDIM's noise scale (0 = deterministic DDIM, 1 = DDPM-like)
    w: float = 0.1                    # weight of the sample's own bottleneck: 1 = plain sampling
    timestep_spacing: str = "trailing"  # the release's 999, 989, ..., 9 then x0 ("linspace" breaks diffusers' DDIM)
    clip_x0: bool = False             # clip the predicted x0 at every step (the release does not)
    clip_final: bool = True           # clip the final sample to [-1, 1] (the release's setting; the uint8
                                      # quantisation saturates at 0 and 255 anyway, so no byte depends on it)
    share_anchor: bool = False        # one anchor pass per anchor per step, shared by its K candidates
    batch_size: int = 512             # trajectories per UNet call (memory only)
    layers: int = 1                   # feature maps interpolated: 1 = the mid block (the paper); n > 1 also
                                      # the last n - 1 skip connections of the down path (clsp's own extension)
    guidance: Optional[float] = None  # classifier-free guidance g of a class-conditional model (the release: 1.8);
                                      # None or 0: plain conditional sampling. An unconditional model refuses it
    start: float = added(1.0)         # partial-noise start s in (0, 1]: with anchors, each trajectory begins at its
                                      # anchor noised to step ~s*T and runs the last floor(s * steps) steps
                                      # (GenView / SDEdit); 1 = from pure noise (the paper)

    def __post_init__(self) -> None:
        check_choice(self.sampler, "sampler", SAMPLERS)
        check_positive(self.steps, "steps")
        check_range(self.eta, "eta", 0.0, 1.0)
        check_range(self.w, "w", 0.0, 1.0)
        check_choice(self.timestep_spacing, "timestep_spacing", TIMESTEP_SPACINGS)
        check_positive(self.batch_size, "batch_size")
        check_positive(self.layers, "layers")
        check(self.guidance is None or self.guidance >= 0, "guidance", f"must be >= 0 (or null), got {self.guidance}")
        check(0.0 < self.start <= 1.0, "start", f"must be in (0, 1], got {self.start}")
        check(steps_run(self.steps, self.start) >= 1, "start",
              f"{self.start} of {self.steps} steps leaves {steps_run(self.steps, self.start)} steps to run; "
              f"raise start to at least {1 / self.steps:g} or use more steps")


def steps_run(steps: int, start: float) -> int:
    """How many of `steps` denoising steps a trajectory started at s = `start` runs: floor(s * steps), as
    diffusers' img2img pipelines count them (a hair of slack so that 0.3 * 10 is 3, not 2)."""
    return int(steps * start + 1e-9)


@dataclass
class DiffusionTrainConfig:
    dataset: DatasetConfig = field(DatasetConfig)
    model: str = "ddpm-cifar10"         # UNet preset: ddpm-cifar10 | small | tiny (image size from the dataset)
    dropout: Optional[float] = None     # None = the preset's (ddpm-cifar10: 0.1)
    init_from: Optional[str] = None     # a diffusers model directory to fine-tune instead of a fresh UNet
    conditional: bool = False           # class-conditional UNet on the dataset's labels (classifier-free guidance)
    label_dropout: float = 0.1          # share of images trained with the null class instead of their label
    beta_end: Optional[float] = None    # the last beta of the linear schedule; None = DDPM's 0.02 (or init_from's)
    batch_size: int = 128               # per device
    lr: float = 2e-4
    warmup_steps: int = 5000
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    max_steps: int = 800_000
    sample_every: int = 5000            # steps between sample grids from the EMA weights
    n_sample_grid: int = 64             # images of a grid, and the DDIM steps that make them; both are
    sample_steps: int = 100             # lowered for a run too short to pay for them (sample_grid_size)
    seed: int = 0
    out_dir: str = "runs/diffusion"
    trainer: TrainerConfig = field(TrainerConfig)

    def __post_init__(self) -> None:
        from clsp.diffusion.unet import PRESETS

        check(self.model in PRESETS, "model", f"must be one of {list(PRESETS)}, got {self.model!r}")
        check(self.dropout is None or 0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(0.0 <= self.label_dropout < 1.0, "label_dropout", f"must be in [0, 1), got {self.label_dropout}")
        check(self.beta_end is None or 0.0 < self.beta_end < 1.0, "beta_end", f"must be in (0, 1), got {self.beta_end}")
        check(self.beta_end is None or self.init_from is None, "beta_end",
              "init_from brings its model's noise schedule; leave beta_end unset to fine-tune it")
        check_positive(self.batch_size, "batch_size")
        check_positive(self.lr, "lr")
        check_nonnegative(self.warmup_steps, "warmup_steps")
        check_positive(self.grad_clip, "grad_clip")
        check_range(self.ema_decay, "ema_decay", 0.0, 1.0)
        check_positive(self.max_steps, "max_steps")
        check_positive(self.sample_every, "sample_every")
        check_nonnegative(self.n_sample_grid, "n_sample_grid")
        check_positive(self.sample_steps, "sample_steps")
