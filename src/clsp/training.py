"""Lightning plumbing shared by every training loop (diffusion and contrastive).

- One Trainer recipe: CSV + TensorBoard logs, a progress bar with it/s and ETA, a checkpoint every N
  steps (`last.ckpt`, written atomically by Lightning), bf16 autocast on GPU, DDP when several
  devices or nodes are asked for (gloo on CPU, so tests can run two processes).
- Exact resume without saving RNG streams: each step seeds its own randomness from
  (seed, global step, rank), and batches are chosen from the global step, so a resumed run replays
  exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from clsp.config import check, check_choice, check_positive


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


def apply_threads(cfg: TrainerConfig) -> None:
    """Set the CPU threads a config asks for (trainer.threads); null leaves the process's choice alone."""
    if cfg.threads is not None:
        from clsp.threads import set_threads

        set_threads(cfg.threads)


def uses_gpu(cfg: TrainerConfig) -> bool:
    return cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto" and torch.cuda.is_available())


def precision(cfg: TrainerConfig) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16-mixed" if uses_gpu(cfg) else "32-true"


def devices(cfg: TrainerConfig):
    if cfg.devices == "auto":
        return "auto"
    if "," in cfg.devices:
        return [int(p) for p in cfg.devices.split(",") if p.strip()]
    return int(cfg.devices)


def world_size(cfg: TrainerConfig) -> int:
    """Processes the Trainer will start (for validating global batch sizes before any work)."""
    d = devices(cfg)
    if d == "auto":
        d = torch.cuda.device_count() if uses_gpu(cfg) else 1
    per_node = len(d) if isinstance(d, list) else int(d)
    return max(1, per_node) * cfg.num_nodes


def make_trainer(cfg: TrainerConfig, run_dir: str | Path, max_steps: int, callbacks: list | None = None,
                 gradient_clip_val: float | None = None, max_epochs: int = -1, **kwargs):
    """A Lightning Trainer writing logs and checkpoints under run_dir."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    run_dir = Path(run_dir)
    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="step{step:08d}", auto_insert_metric_name=False,
                           every_n_train_steps=cfg.checkpoint_every, save_last=True, save_top_k=1,
                           monitor="step", mode="max", save_on_train_epoch_end=True)
    cbs = [ckpt, LearningRateMonitor(logging_interval="step")] + list(callbacks or [])
    if cfg.progress:
        cbs.append(run_progress_bar(refresh_rate=max(1, cfg.log_every)))
    strategy = cfg.strategy
    if strategy == "auto" and world_size(cfg) > 1:
        strategy = "ddp"
    return L.Trainer(
        default_root_dir=str(run_dir),
        accelerator="gpu" if cfg.accelerator == "cuda" else cfg.accelerator,
        devices=devices(cfg), num_nodes=cfg.num_nodes, strategy=strategy,
        precision=precision(cfg), max_steps=max_steps, max_epochs=max_epochs,
        logger=[CSVLogger(str(run_dir), name="logs", version=""), TensorBoardLogger(str(run_dir), name="tb", version="")],
        callbacks=cbs, log_every_n_steps=cfg.log_every, enable_progress_bar=cfg.progress,
        gradient_clip_val=gradient_clip_val, deterministic=cfg.deterministic, enable_model_summary=False,
        num_sanity_val_steps=0, **kwargs,
    )


def run_progress_bar(refresh_rate: int):
    """Lightning's tqdm bar, but over the whole run (global step / max steps) instead of one epoch,
    so its rate and ETA are the run's, also after a resume."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    class RunProgressBar(TQDMProgressBar):
        def on_train_epoch_start(self, trainer, *_):
            bar = self.train_progress_bar
            total = trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches
            if bar.total != total:
                bar.reset(total=total)
                bar.n = bar.initial = trainer.global_step
                bar.refresh()
            bar.set_description(f"epoch {trainer.current_epoch}")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            n = trainer.global_step
            if self._should_update(n, self.train_progress_bar.total):
                self.train_progress_bar.n = n
                self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar

    return RunProgressBar(refresh_rate=refresh_rate)


def last_checkpoint(run_dir: str | Path) -> Optional[Path]:
    """The checkpoint to resume from, if a previous run left one."""
    path = Path(run_dir) / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def step_seed(seed: int, step: int, rank: int = 0, stream: str = "") -> int:
    """A 63-bit seed for one step's randomness on one rank (augmentation, noise, candidate choice)."""
    digest = hashlib.blake2b(f"{seed}|{step}|{rank}|{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def epoch_batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """The dataset indices of one rank's batch at a global step: a fresh permutation per epoch
    (drop_last), split across ranks. Derived from the step alone, so resume is exact."""
    global_batch = batch_size * world
    per_epoch = max(1, n // global_batch)
    epoch, within = divmod(step, per_epoch)
    start = within * global_batch + rank * batch_size
    return epoch_permutation(n, seed, epoch)[start:start + batch_size].copy()


@functools.lru_cache(maxsize=2)
def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffle of one epoch, drawn once per epoch rather than at every step (read-only)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    perm.flags.writeable = False
    return perm


class StepLoader:
    """A stand-in DataLoader for GPU-resident data: yields only the step number within the epoch.

    The LightningModule gathers its batch from tensors already on the device using
    `epoch_batch_indices(global_step, ...)`; no worker processes, no host-to-device copies.
    """

    def __init__(self, steps_per_epoch: int) -> None:
        self.steps_per_epoch = max(1, steps_per_epoch)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.steps_per_epoch))
