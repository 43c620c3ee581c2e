"""Lightning plumbing shared by every training loop (diffusion and contrastive).

- One Trainer recipe: the CSV history + TensorBoard (or wandb, mlflow: clsp.loggers) logs, a progress bar with it/s and ETA, a checkpoint every N
  steps (`last.ckpt`), bf16 autocast on GPU, DDP when several devices or nodes are asked for (gloo on
  CPU, so tests can run two processes).
- Nothing lost, nothing half-written: checkpoints are written beside their final name, fsynced and
  renamed (AtomicCheckpointIO), and load tensors only (weights_only=True); resume takes the newest
  checkpoint that loads; the CSV history keeps every step of every session (HistoryCSVLogger).
- Exact resume without saving RNG streams: each step seeds its own randomness from
  (seed, global step, rank), and batches are chosen from the global step, so a resumed run replays
  exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import logging
import os
import re
import signal
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist

from clsp.errors import UserError
from clsp.training_config import TrainerConfig

log = logging.getLogger("clsp")


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
    """A Lightning Trainer writing logs and checkpoints under run_dir: RUN/logs/metrics.csv and the loggers of
    trainer.logger (clsp.loggers), checkpoints in RUN/checkpoints."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor

    from clsp.loggers import make_loggers, record_runs

    run_dir = Path(run_dir)
    loggers = [history_csv_logger(run_dir), *make_loggers(cfg, run_dir)]   # metrics.csv whatever trainer.logger says
    ckpt = checkpoint_after_logging()(dirpath=run_dir / "checkpoints", filename="step{step:08d}", auto_insert_metric_name=False,
                                      every_n_train_steps=cfg.checkpoint_every, save_last=True, save_top_k=1,
                                      monitor="step", mode="max", save_on_train_epoch_end=True)
    cbs = [ckpt, LearningRateMonitor(logging_interval="step"), time_estimate(), record_runs()] + list(callbacks or [])
    if cfg.progress:
        cbs.append(run_progress_bar(refresh_rate=max(1, cfg.log_every)))
    quiet_lightning()
    strategy = cfg.strategy
    if strategy == "auto" and world_size(cfg) > 1:
        strategy = "ddp"
    return L.Trainer(
        default_root_dir=str(run_dir),
        accelerator="gpu" if cfg.accelerator == "cuda" else cfg.accelerator,
        devices=devices(cfg), num_nodes=cfg.num_nodes, strategy=strategy,
        precision=precision(cfg), max_steps=max_steps, max_epochs=max_epochs,
        logger=loggers,
        plugins=[atomic_checkpoint_io()], callbacks=cbs, log_every_n_steps=cfg.log_every, enable_progress_bar=cfg.progress,
        gradient_clip_val=gradient_clip_val, deterministic=cfg.deterministic, enable_model_summary=False,
        num_sanity_val_steps=0, **kwargs,
    )


def checkpoint_after_logging():
    """Lightning's ModelCheckpoint, saving the state after step s once step s has logged everything.

    Lightning saves in `on_train_batch_end`, before it writes that step's metrics row and, at an epoch's last
    step, before the epoch's end (the probe and kNN monitors and their row). A kill or a full disk in that
    window left a checkpoint whose rows, or whose final validation, no rerun wrote again (metrics.csv one row
    short, metrics.json an epoch behind). Here the checkpoint of step s is written at the start of step s + 1,
    or when training ends: the same state, with its rows already on disk."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    class CheckpointAfterLogging(ModelCheckpoint):
        def on_train_start(self, trainer, pl_module) -> None:
            super().on_train_start(trainer, pl_module)
            self._last_global_step_saved = trainer.global_step   # a resumed session keeps the checkpoint it came from

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            pass

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self._save_if_due(trainer, pl_module)

        def on_train_end(self, trainer, pl_module) -> None:
            self._save_if_due(trainer, pl_module)
            super().on_train_end(trainer, pl_module)

        def _save_if_due(self, trainer, pl_module) -> None:
            # The loop's count of logged steps as it stood in on_train_batch_end, where Lightning expects a
            # checkpoint (it counts the step after that hook): a resumed run logs each step under its own number.
            loop = trainer.fit_loop.epoch_loop
            loop._batches_that_stepped -= 1
            try:
                super().on_train_batch_end(trainer, pl_module, None, None, 0)
            finally:
                loop._batches_that_stepped += 1

    CheckpointAfterLogging.__qualname__ = ModelCheckpoint.__qualname__  # its state key: checkpoints of either resume
    return CheckpointAfterLogging


def quiet_lightning() -> None:
    """Lightning's info lines (accelerators found, tips, `fit` stopped) say nothing a clsp user needs, and
    print twice beside clsp's own logging; its warnings still show, but for a deprecation inside Lightning
    itself (its use of torch's LeafSpec), which no user can act on, and for "fewer batches than the logging
    interval" on a short epoch: clsp logs by global step, so its logs are complete either way."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")


def format_duration(seconds: float) -> str:
    """1 h 05 min, 4 min 10 s, 12 s."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def estimate_line(stage: str, measured_steps: int, seconds: float, remaining_steps: int, device: str,
                  done_steps: int | None = None) -> str:
    """What a few measured steps say about the rest of a stage; `done_steps`: the steps this run has made so
    far, the measured ones last (so that the line names them, and its counts add up to the total)."""
    per_step = seconds / measured_steps
    measured = (f"{measured_steps} steps" if done_steps is None else
                f"steps {done_steps - measured_steps + 1:,}-{done_steps:,} of {done_steps + remaining_steps:,}")
    line = (f"{stage}: {measured} took {seconds:.1f} s ({per_step:.2f} s a step); the remaining "
            f"{remaining_steps:,} steps will take about {format_duration(per_step * remaining_steps)} on this {device}")
    if device == "cpu" and per_step * remaining_steps > 3600:
        line += " (a GPU preset on a CPU? stop with Ctrl-C and choose a smaller preset or fewer steps)"
    return line


# Work a CPU thread does in a second, in parameters x input values per training step: the demo's pretraining
# (ResNet-18 at width 32, 200 grey 16 px images a step) on this project's 2-core VM; an order of magnitude, for
# naming a GPU-sized run before its first step, not for the estimate itself (that is timed).
CPU_WORK_PER_SECOND = 5e10
GPU_SIZED_HOURS = 10.0


def gpu_sized_line(stage: str, parameters: int, values_per_step: int, steps: int) -> str | None:
    """On a CPU, before the first step: a run whose size alone (parameters x input values per step x steps)
    means many hours of CPU is named as sized for a GPU, before minutes go into timing its first steps."""
    hours = parameters * values_per_step * steps / CPU_WORK_PER_SECOND / 3600
    if hours < GPU_SIZED_HOURS:
        return None
    return (f"{stage}: this run is sized for a GPU ({steps:,} steps, {values_per_step:,} input values a step, "
            f"{parameters / 1e6:.1f}M parameters): on a CPU it takes in the order of {format_duration(hours * 3600)}; "
            "stop with Ctrl-C and choose a CPU-sized preset (--config demo) or fewer steps, or wait for the timed "
            "estimate after its first steps")


def _images(batch):
    """The first 4-dimensional tensor of a batch (images), looking into tuples, lists and dicts."""
    if hasattr(batch, "dim"):
        return batch if batch.dim() == 4 else None
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    return next((found for found in map(_images, items) if found is not None), None)


def time_estimate(measured_steps: int = 3, min_seconds: float = 120.0, clock=None):
    """A callback that names a GPU-sized run on a CPU before its first step (from its size), then times a few
    training steps after the first (which includes warm-up) and, when the rest of the run will take more than
    `min_seconds`, says how long it will take."""
    import time

    from lightning.pytorch.callbacks import Callback

    clock = clock or time.perf_counter

    class TimeEstimate(Callback):
        def __init__(self) -> None:
            self.start_step: int | None = None
            self.started = 0.0
            self.sized = False

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.sized:
                return
            self.sized = True
            images = _images(batch)
            if trainer.strategy.root_device.type != "cpu" or not trainer.is_global_zero or images is None:
                return
            steps = (trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches) - trainer.global_step
            parameters = sum(p.numel() for p in pl_module.parameters())
            line = gpu_sized_line("training", parameters, images.numel() * trainer.world_size, int(steps))
            if line:
                import logging

                logging.getLogger("clsp").info(line)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            step = trainer.global_step
            if self.start_step is None:          # the first step of this run (or of this resume) is warm-up
                self.start_step, self.started = step, clock()
                return
            if step - self.start_step != measured_steps:
                return
            seconds = clock() - self.started
            remaining = trainer.max_steps - step if trainer.max_steps > 0 else 0
            if trainer.is_global_zero and remaining * seconds / measured_steps > min_seconds:
                import logging

                device = "cpu" if trainer.strategy.root_device.type == "cpu" else str(trainer.strategy.root_device)
                logging.getLogger("clsp").info(estimate_line("training", measured_steps, seconds, remaining, device,
                                                             done_steps=step))

    return TimeEstimate()


def run_progress_bar(refresh_rate: int):
    """Lightning's tqdm bar, but over the whole run (global step / max steps) instead of one epoch,
    so its rate and ETA are the run's, also after a resume. It redraws every `refresh_rate` steps, and
    at least every 2 s, so that slow steps (a CPU) show a rate and ETA from the first steps on."""
    import time

    from lightning.pytorch.callbacks import TQDMProgressBar

    class RunProgressBar(TQDMProgressBar):
        _drawn = 0.0

        def _should_update(self, current: int, total) -> bool:
            due = time.monotonic() - self._drawn >= 2.0
            return self.is_enabled and (current % self.refresh_rate == 0 or current == total or due)

        def init_train_tqdm(self):
            """The bar made with its run-wide total, start and epoch, so that it is drawn once at its start
            (Lightning's is drawn at creation, then again at each reset to the epoch's total)."""
            import sys

            from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

            trainer = self.trainer
            total = trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches
            return Tqdm(desc=f"epoch {trainer.current_epoch}", total=total, initial=trainer.global_step,
                        position=2 * self.process_position, disable=self.is_disabled, leave=True, dynamic_ncols=True,
                        file=sys.stdout, smoothing=0, bar_format=self.BAR_FORMAT)

        def on_train_epoch_start(self, trainer, *_):
            self.train_progress_bar.set_description(f"epoch {trainer.current_epoch}", refresh=False)  # drawn at the next step

        def on_train_epoch_end(self, trainer, pl_module):
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            n = trainer.global_step
            if n == self.train_progress_bar.total:        # the last step: drawn once, when the bar closes
                self.train_progress_bar.n = n
                self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            elif self._should_update(n, self.train_progress_bar.total):
                self.train_progress_bar.n = n
                self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar
                self._drawn = time.monotonic()

    return RunProgressBar(refresh_rate=refresh_rate)


def fit(trainer, module, **kwargs) -> None:
    """trainer.fit, with Ctrl-C kept a KeyboardInterrupt: Lightning catches it, shuts down and exits
    with code 1 (ignoring SIGINT from then on); here it becomes KeyboardInterrupt again (exit 130)."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(module, **kwargs)
    except SystemExit:
        if not trainer.interrupted:
            raise
        try:
            signal.signal(signal.SIGINT, handler)
        except (ValueError, TypeError):  # not the main thread, or a handler set outside Python
            pass
        raise KeyboardInterrupt from None


# -- checkpoints -----------------------------------------------------------------------------------

def load_checkpoint(path: str | Path, map_location=None, mmap: bool = False) -> dict:
    """A checkpoint's contents, unpickling tensors and plain values only: a file that asks for anything
    else (a hostile or foreign pickle) fails instead of running code, whatever torch's default is."""
    return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def atomic_checkpoint_io():
    """Lightning's checkpoint I/O, made atomic for real and tensor-only on load.

    Lightning stages a checkpoint in the system's temporary folder (fsspec) and then moves it; across
    filesystems, or when the disk fills mid-copy, that move is a copy cut short under the final name.
    Here the bytes go to a temporary file in the checkpoint's own folder, are fsynced and renamed."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    from clsp.io import atomic_write

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
            try:
                with atomic_write(path) as f:
                    torch.save(checkpoint, f)
            except RuntimeError as e:   # torch's zip writer reports a failed write (ENOSPC ...) as its own error
                cause = e.__context__
                while cause is not None and not isinstance(cause, OSError):
                    cause = cause.__context__
                if cause is None:
                    raise
                if cause.filename is None:
                    cause.filename = str(path)
                raise cause from None

        def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None) -> dict:
            return load_checkpoint(path, map_location)

    return AtomicCheckpointIO()


class ForeignCheckpointError(UserError):
    """A checkpoint that unpickles objects other than tensors and plain values: not one clsp wrote."""


def try_checkpoint(path: Path) -> tuple[int | None, str]:
    """(global step, "") when the checkpoint loads, else (None, why). Cheap: memory-mapped, tensors unread."""
    import pickle

    try:
        step = load_checkpoint(path, map_location="cpu", mmap=True)["global_step"]
        return int(step), ""
    except pickle.UnpicklingError as e:
        asks = [line.strip() for line in str(e).splitlines() if "global" in line.lower()]
        if asks:
            raise ForeignCheckpointError(
                f"{path} asks to run code or build Python objects when loaded ({asks[-1][:200]}); clsp never "
                "writes such a checkpoint, so it was not made by this run: delete it (the run then resumes from "
                "another checkpoint, or starts over) and find out how it got there") from None
        return None, str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    except Exception as e:  # noqa: BLE001 - truncated, zeroed or otherwise unreadable: skipped, and said so
        text = str(e).strip().splitlines()
        return None, text[0][:200] if text else type(e).__name__


def last_checkpoint(run_dir: str | Path) -> Optional[Path]:
    """The checkpoint to resume from: last.ckpt, or when it does not load (a full disk, a kill, a damaged
    file) the newest step*.ckpt that does, with a line saying so; None when there is none. Temporary
    files of a killed writer are removed (the caller holds the run lock)."""
    from clsp.io import remove_temporaries
    from clsp.lock import is_launcher

    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    if is_launcher(run_dir):
        remove_temporaries(folder)
    steps = sorted(folder.glob("step*.ckpt"), key=lambda p: _step_of(p.name), reverse=True)
    candidates = [p for p in [folder / "last.ckpt", *steps] if p.is_file()]
    skipped = []
    for path in candidates:
        step, why = try_checkpoint(path)
        if step is not None:
            if skipped:
                log.warning(f"resume: {'; '.join(skipped)}; resuming from {path.name} (step {step}) instead")
            return path
        skipped.append(f"{path} does not load ({why})")
    if skipped:
        log.warning(f"resume: {'; '.join(skipped)}; no checkpoint loads, so training starts from step 0")
    return None


def _step_of(name: str) -> int:
    match = re.search(r"(\d+)", name)
    return int(match.group(1)) if match else -1


# -- the training history --------------------------------------------------------------------------

def history_csv_logger(run_dir: str | Path):
    """Lightning's CSVLogger writing RUN/logs/metrics.csv, but keeping the history of earlier sessions.

    Lightning's writer deletes metrics.csv when a run resumes. This one keeps every row. A resumed run
    re-logs the steps between its checkpoint and the kill; a row with the step and the columns of an
    earlier row replaces that row, so the file holds each step once, in the order an uninterrupted run
    writes it. A last line torn by a kill (no newline yet) is dropped. Rows are appended; the file is
    rewritten (atomically) only when a row is replaced or a new column appears."""
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter
    from lightning.fabric.loggers.logger import rank_zero_experiment

    from clsp.io import atomic_write

    class HistoryWriter(ExperimentWriter):
        def __init__(self, log_dir: str) -> None:  # not the parent's: it deletes the old metrics.csv
            self.hparams: dict = {}
            self.metrics: list[dict] = []
            self.log_dir = log_dir
            self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
            os.makedirs(log_dir, exist_ok=True)
            self.metrics_keys, self.rows = read_history(self.metrics_file_path)
            self._keys = {_row_key(r) for r in self.rows}
            self._torn = _has_torn_line(self.metrics_file_path)

        def save(self) -> None:
            if not self.metrics:
                return
            keys = {_row_key(r) for r in self.metrics}
            replaced = keys & self._keys
            if replaced:
                self.rows = [r for r in self.rows if _row_key(r) not in replaced]
            self.rows += self.metrics
            self._keys |= keys
            new_columns = set().union(*self.metrics) - set(self.metrics_keys)
            self.metrics_keys = sorted(set(self.metrics_keys) | new_columns)
            if replaced or new_columns or self._torn or not os.path.isfile(self.metrics_file_path):
                with atomic_write(self.metrics_file_path) as f:
                    text = _csv_text(self.metrics_keys, self.rows, header=True)
                    f.write(text.encode("utf-8"))
                self._torn = False
            else:
                with open(self.metrics_file_path, "a", newline="", encoding="utf-8") as f:
                    f.write(_csv_text(self.metrics_keys, self.metrics, header=False))
            self.metrics = []

    class HistoryCSVLogger(CSVLogger):
        @property
        @rank_zero_experiment
        def experiment(self):
            if self._experiment is None:
                os.makedirs(self.root_dir, exist_ok=True)
                self._experiment = HistoryWriter(log_dir=self.log_dir)
            return self._experiment

    return HistoryCSVLogger(str(run_dir), name="logs", version="")


def read_history(path: str | Path) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a metrics.csv; a last line without its newline (torn by a kill) is dropped."""
    path = Path(path)
    if not path.is_file():
        return [], []
    text = path.read_bytes().decode("utf-8", errors="replace")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(text.splitlines())
    rows = [{k: v for k, v in row.items() if k is not None and v not in (None, "")} for row in reader]
    return list(reader.fieldnames or []), rows


def _has_torn_line(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


def _row_key(row: dict) -> tuple:
    """A row is one logging call: its step and which columns it filled."""
    return str(row.get("step")), tuple(sorted(k for k, v in row.items() if k != "step" and v not in (None, "")))


def _csv_text(columns: list[str], rows: list[dict], header: bool) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\r\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


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


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def checkpoint_step(path: str | Path | None) -> int:
    """The global step a checkpoint was saved at (0 without one): where a resumed run's batches continue."""
    if path is None:
        return 0
    return int(load_checkpoint(path, map_location="cpu", mmap=True)["global_step"])


class ResidentBatches:
    """The batch path of a training set held on the device (uint8 NHWC images, int64 labels or None).

    The batch of global step s is `epoch_batch_indices(s)`: a fresh seeded permutation per epoch, whole
    batches only, split across ranks, gathered on the device (no worker, no host copy of pixels). Being a
    function of the step, `from_step(s)` yields exactly the batches an uninterrupted run yields from step
    s on. `loader(world, start_step)` is Lightning's train loader over it: one epoch per `iter()`, the
    first from `start_step` (the resumed checkpoint's) to the end of its epoch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, batch_size: int, seed: int) -> None:
        self.images, self.labels, self.batch_size, self.seed = images, labels, batch_size, seed

    def to(self, device: torch.device | str) -> "ResidentBatches":
        self.images = self.images.to(device)
        self.labels = None if self.labels is None else self.labels.to(device)
        return self

    def steps_per_epoch(self, world: int) -> int:
        return len(self.images) // (self.batch_size * world)

    def from_step(self, step: int, rank: int = 0, world: int = 1) -> Iterator[tuple]:
        """(dataset indices, uint8 images, labels or None) of this rank's share of each global step from
        `step` on, endlessly, on the images' device."""
        device = self.images.device
        while True:
            index = torch.from_numpy(epoch_batch_indices(len(self.images), self.batch_size, step, self.seed, rank, world))
            if device.type == "cuda":                 # no host sync: pinned source, asynchronous copy
                index = index.pin_memory()
            index = index.to(device, non_blocking=True)
            yield index, self.images[index], None if self.labels is None else self.labels[index]
            step += 1

    def loader(self, world: int, start_step: int = 0) -> "_EpochLoader":
        return _EpochLoader(self, world, start_step)


class _EpochLoader:
    """`ResidentBatches.from_step` cut into epochs for Lightning, each `iter()` continuing where the last one
    stopped. Lightning counts the batches a resumed epoch has done, so the first epoch ends with it."""

    def __init__(self, batches: ResidentBatches, world: int, start_step: int) -> None:
        self.batches, self.next_step = batches, start_step
        self.steps_per_epoch = max(1, batches.steps_per_epoch(world))

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[tuple]:
        rank, world = rank_and_world()
        first = self.next_step
        stop = (first // self.steps_per_epoch + 1) * self.steps_per_epoch
        for batch in itertools.islice(self.batches.from_step(first, rank, world), stop - first):
            self.next_step += 1
            yield batch
