"""Noise schedules: the training schedule of DDPM, and diffusers' samplers built from a model's schedule.

Every sampler is constructed from the scheduler config saved with the model (its betas), so a model
trained here and a public checkpoint are sampled the same way. Timesteps stay on the host: diffusers'
schedulers index their tables with them, and a host table indexed by a host scalar costs no device sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sampler:
    """How a sampler name becomes a diffusers scheduler and what its `step` takes."""

    scheduler: str                                 # the diffusers scheduler class
    options: dict = field(default_factory=dict)    # construction arguments besides the model's schedule
    clips_x0: bool = False                         # takes `clip_sample` (clip the predicted x0 each step)
    step_args: tuple[str, ...] = ()                # of "eta", "generator": what its `step` is given


# The multistep solvers (DPM-Solver++ 2nd order, UniPC bh2) are deterministic; eta is DDIM's alone.
SAMPLER_TABLE = {
    "ddim": Sampler("DDIMScheduler", clips_x0=True, step_args=("eta", "generator")),
    "ddpm": Sampler("DDPMScheduler", clips_x0=True, step_args=("generator",)),
    "dpmsolver++": Sampler("DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver++", solver_order=2,
                                                               thresholding=False, variance_type=None),
                           step_args=("generator",)),
    "unipc": Sampler("UniPCMultistepScheduler", dict(predict_x0=True, solver_type="bh2", thresholding=False)),
}
SAMPLERS = tuple(SAMPLER_TABLE)
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")

# DDPM (Ho et al. 2020), as in google/ddpm-cifar10-32: T = 1000, linear betas 1e-4 .. 0.02, epsilon prediction.
TRAINING_SCHEDULE = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "variance_type": "fixed_large",
    "clip_sample": True,
}


def training_scheduler(scheduler_config: dict | None = None):
    """The DDPMScheduler whose betas and `add_noise` the training loop uses (DDPM's schedule by default)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(_public(scheduler_config or TRAINING_SCHEDULE))


def make_scheduler(scheduler_config: dict, sampler: str, steps: int, timestep_spacing: str = "trailing",
                   clip_x0: bool = False):
    """A sampler over `steps` timesteps of the model's schedule, with its timesteps set (on the host).

    The default spacing is the release's: `linspace(-1, T-1, steps+1)` truncated to int, i.e. for
    T = 1000 and 100 steps 999, 989, ..., 9, which is diffusers' "trailing" ("leading" would give
    990, ..., 0). DDIM keeps diffusers' DDIM defaults for what a DDPM config does not say
    (set_alpha_to_one=True, steps_offset=0), so the step from t = 9 lands on x_0 with alpha 1, as in
    the release. diffusers' DDIM takes the previous timestep as t - T // steps, which is exact only
    when `steps` divides T (100 of 1000 does). Each sampler's class and arguments: `SAMPLER_TABLE`.
    """
    import diffusers

    if sampler not in SAMPLER_TABLE:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    spec = SAMPLER_TABLE[sampler]
    options = {**spec.options, "timestep_spacing": timestep_spacing, **({"clip_sample": clip_x0} if spec.clips_x0 else {})}
    scheduler = getattr(diffusers, spec.scheduler).from_config(_public(scheduler_config), **options)
    scheduler.set_timesteps(steps)
    return scheduler


def step_kwargs(sampler: str, eta: float, generator) -> dict:
    """The extra arguments of the sampler's `step`: DDIM's eta, and the sample stream for noise."""
    given = {"eta": eta, "generator": generator}
    return {name: given[name] for name in SAMPLER_TABLE[sampler].step_args}


def _public(config: dict) -> dict:
    """A scheduler config without diffusers' bookkeeping keys (`_class_name`, `_diffusers_version`)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}
