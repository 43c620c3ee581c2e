"""`clsp synthesize`'s config. Torch-free, so that its --help imports neither torch nor diffusers."""

from __future__ import annotations

from dataclasses import dataclass

from clsp.config import check_device, check_given, check_positive, field
from clsp.data.config import DatasetConfig
from clsp.diffusion.config import SamplerConfig


@dataclass
class SynthesizeConfig:
    model: str = ""                   # diffusion model directory (diffusers layout; `clsp diffusion train` makes one)
    dataset: DatasetConfig = field(DatasetConfig)
    split: str = "train"              # the split whose images become anchors
    k: int = 8                        # candidates per image
    sampler: SamplerConfig = field(SamplerConfig)  # sampler, steps, eta, w (interpolation weight), batch_size, ...
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
