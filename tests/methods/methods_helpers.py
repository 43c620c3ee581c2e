"""Helpers of the pretraining tests: tiny configs on scikit-learn digits (8x8, native size), a real
positives store for them, and the CSV log reader."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np

TINY = [
    "dataset.name=digits", "batch_size=16", "epochs=1", "warmup_epochs=0", "lr=0.05",
    "backbone.arch=resnet10", "projector.hidden_dim=64", "projector.out_dim=32",
    "moco.queue_size=64", "nnclr.support_size=64", "nnclr.predictor_hidden_dim=64",
    "all4one.support_size=64", "all4one.predictor_hidden_dim=64", "all4one.ff_dim=64",
    "knn.every_n_epochs=1", "knn.k=5", "knn.batch_size=256",
    "trainer.accelerator=cpu", "trainer.progress=false", "trainer.log_every=1", "trainer.deterministic=true",
]


def tiny_config(out_dir: Path, *overrides: str):
    """A PretrainConfig that trains in seconds on CPU: digits subset, ResNet-10, narrow heads."""
    from clsp.config import load_config
    from clsp.methods.pretrain import PretrainConfig

    return load_config(PretrainConfig, None, [*TINY, f"out_dir={out_dir}", *overrides])


def make_store(path: Path, dataset, k: int = 3, chunk_size: int = 40) -> Path:
    """A complete positives store written by the positives package's own writer. The candidates are
    shifted and mirrored copies of each image: different pixels, the same content."""
    from clsp.positives.store import StoreWriter, chunk_bounds, chunk_count, dataset_record, new_manifest

    images = dataset.images
    candidates = np.stack([np.roll(images, 1 + j, axis=2)[:, :, ::(-1) ** j] for j in range(k)], axis=1)
    manifest = new_manifest(dataset_record(dataset), "test-model", {"k": k, "seed": 0, "chunk_size": chunk_size},
                            sources={}, versions={})
    writer = StoreWriter(path, manifest)
    writer.start()
    for i in range(chunk_count(len(images), chunk_size)):
        start, stop = chunk_bounds(i, len(images), chunk_size)
        writer.write_chunk(i, np.ascontiguousarray(candidates[start:stop]))
    writer.finish()
    return path


def read_log(run_dir: Path) -> dict[str, list[float]]:
    """Columns of logs/metrics.csv (Lightning's CSV logger), empty cells dropped."""
    import csv

    with open(Path(run_dir) / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if value not in ("", None):
                columns.setdefault(key, []).append(float(value))
    return columns


class StopAt(L.Callback):
    """Kills training (an exception, as a crash would) when the global step reaches `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyError("simulated crash")
