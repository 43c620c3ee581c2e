"""`clsp synthesize`'s config, with its per-candidate strength section (clsp.positives.strength). Torch-free, so
that its --help imports neither torch nor diffusers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from clsp.config import added_section, check, check_choice, check_device, check_given, check_positive, field
from clsp.data.config import DatasetConfig
from clsp.diffusion.config import SamplerConfig


SPACES = ("unet", "resnet", "pixels")     # the label-free feature spaces of clsp.positives.strength


@dataclass
class StrengthConfig:
    grid: List[float] = field(list)   # start values to try per candidate, e.g. [0.8, 0.6, 0.4]; [] = off (sampler.start for all)
    floor: float = 0.5                # the least label-free cosine to the anchor a candidate must keep
    space: str = "unet"               # unet | resnet | pixels: the label-free feature space of that cosine

    def __post_init__(self) -> None:
        check(all(0.0 < s <= 1.0 for s in self.grid), "strength.grid", f"values must be in (0, 1], got {self.grid}")
        check(len(set(self.grid)) == len(self.grid), "strength.grid", f"values must differ, got {self.grid}")
        check(-1.0 <= self.floor <= 1.0, "strength.floor", f"must be a cosine in [-1, 1], got {self.floor}")
        check_choice(self.space, "strength.space", SPACES)

    @property
    def active(self) -> bool:
        return bool(self.grid)


@dataclass
class SynthesizeConfig:
    model: str = ""                   # diffusion model directory (diffusers layout; `clsp diffusion train` makes one)
    dataset: DatasetConfig = field(DatasetConfig)
    split: str = "train"              # the split whose images become anchors
    k: int = 8                        # candidates per image
    sampler: SamplerConfig = field(SamplerConfig)  # sampler, steps, eta, w (interpolation weight), start, batch_size, ...
    strength: StrengthConfig = added_section(StrengthConfig)  # per-candidate start: grid, floor, space (clsp.positives.strength);
                                                      # its space also scores every candidate's similarity to its anchor
    seed: int = 0
    chunk_size: int = 512             # images per chunk file (the unit of resume and of work per rank)
    out_dir: str = ""                 # the store directory
    device: str = "auto"              # auto | cpu | cuda | cuda:N; under torchrun each process uses the GPU of its LOCAL_RANK
    progress: bool = True

    def __post_init__(self) -> None:
        check_given(bool(self.model), "model", "must name a diffusion model directory (--model DIR)")
        check_given(bool(self.out_dir), "out_dir", "must name the store directory to write (--out STORE)")
        check_positive(self.k, "k")
        check_positive(self.chunk_size, "chunk_size")
        check_device(self.device, "device")
        from clsp.diffusion.config import steps_run

        short = [s for s in self.strength.grid if steps_run(self.sampler.steps, s) < 1]
        check(not short, "strength.grid", f"{short} of {self.sampler.steps} steps leave no step to run; "
                                          f"use values >= {1 / self.sampler.steps:g} or more steps")
