"""The `trainer` section of every training command's config (Lightning's devices, precision, checkpoints,
threads, the compiled step, the experiment loggers). Torch-free, so that a command's --help, built from it,
imports no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from clsp.config import check, check_choice, check_positive, unhashed


# The experiment loggers a training run can write to beside its own metrics.csv (clsp.loggers builds them).
LOGGERS = ("tensorboard", "csv", "wandb", "mlflow")


@dataclass
class TrainerConfig:
    accelerator: str = "auto"       # auto | cpu | gpu
    devices: str = "1"              # a count, "auto", or a list like "0,1"
    num_nodes: int = 1
    strategy: str = "auto"          # auto | ddp | ddp_spawn ... (Lightning names)
    precision: str = "auto"         # auto = bf16-mixed on GPU, 32-true on CPU
    checkpoint_every: int = 500     # steps between checkpoints (last.ckpt)
    log_every: int = 10             # steps between logged scalars
    progress: bool = True
    deterministic: bool = False     # torch deterministic algorithms (slower on GPU; tests use it on CPU)
    threads: Optional[int] = None   # CPU threads of torch's intra-op pool; null = CLSP_THREADS, OMP_NUM_THREADS,
                                    # or the CPUs this process may use (clsp.threads)
    compile: Optional[bool] = None  # torch.compile the pretraining step; null = on one CUDA device only.
                                    # The diffusion UNet is compiled only when true (and on a GPU)
    compile_mode: str = "default"   # torch.compile mode: default | reduce-overhead (CUDA graphs) | max-autotune
    logger: str = unhashed("tensorboard")  # beside RUN/logs/metrics.csv (always written): tensorboard | csv (metrics.csv
                                    # alone) | wandb | mlflow, or several comma-separated: tensorboard,wandb

    def __post_init__(self) -> None:
        check_choice(self.accelerator, "trainer.accelerator", ["auto", "cpu", "gpu", "cuda"])
        check_positive(self.num_nodes, "trainer.num_nodes")
        check(self.threads is None or self.threads >= 1, "trainer.threads", f"must be >= 1 (or null), got {self.threads}")
        check_positive(self.checkpoint_every, "trainer.checkpoint_every")
        check_positive(self.log_every, "trainer.log_every")
        check_choice(self.precision, "trainer.precision", ["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true"])
        check_choice(self.compile_mode, "trainer.compile_mode", ["default", "reduce-overhead", "max-autotune",
                                                                 "max-autotune-no-cudagraphs"])
        check(self.devices == "auto" or all(p.strip().isdigit() for p in self.devices.split(",")),
              "trainer.devices", f"must be a count, 'auto' or a list like '0,1', got {self.devices!r}")
        names = self.loggers
        unknown = [n for n in names if n not in LOGGERS]
        check(bool(names) and not unknown, "trainer.logger",
              f"must be one or more of {', '.join(LOGGERS)} (comma-separated, e.g. tensorboard,wandb), got {self.logger!r}")

    @property
    def loggers(self) -> List[str]:
        """The loggers of trainer.logger, in order, each once (metrics.csv is written whatever they are)."""
        return list(dict.fromkeys(n.strip().lower() for n in str(self.logger).split(",") if n.strip()))
