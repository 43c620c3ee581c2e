"""Stores written through the real StoreWriter with planted contents, for the tests whose subject is
the store itself (the synthesis tests use the real sampler)."""

from __future__ import annotations

import numpy as np

from clsp.positives.store import StoreWriter, chunk_bounds, dataset_record, new_manifest


def planted_candidates(n: int, k: int, shape=(8, 8, 1), seed: int = 0) -> np.ndarray:
    """Random uint8 candidates [n, K, H, W, C] whose first three pixels of channel 0 name them:
    (slot, index % 256, index // 256)."""
    cands = np.random.default_rng(seed).integers(0, 256, size=(n, k, *shape), dtype=np.uint8)
    index = np.arange(n)
    cands[:, :, 0, 0, 0] = np.arange(k)[None, :]
    cands[:, :, 0, 1, 0] = (index % 256)[:, None]
    cands[:, :, 0, 2, 0] = (index // 256)[:, None]
    return cands


def make_manifest(dataset, k=3, chunk_size=8, seed=0, steps=2) -> dict:
    generation = {"k": k, "seed": seed, "chunk_size": chunk_size, "sampler": {"sampler": "fake", "steps": steps}}
    return new_manifest(dataset_record(dataset), "modelhash", generation, {"model_dir": "none"}, {})


def write_store(path, dataset, candidates: np.ndarray, chunk_size=8, chunks=None, rank=0, world=1) -> StoreWriter:
    """Write `candidates` (all N of them) into a store through StoreWriter; only `chunks` if given."""
    writer = StoreWriter(path, make_manifest(dataset, candidates.shape[1], chunk_size), rank=rank, world=world)
    writer.start()
    for i in (writer.my_chunks() if chunks is None else chunks):
        start, stop = chunk_bounds(i, len(dataset), chunk_size)
        writer.write_chunk(i, candidates[start:stop])
    if rank == 0:
        writer.finish()
    return writer
