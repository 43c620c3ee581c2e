"""What a store holds, in numbers: size on disk, pixel statistics per candidate slot, degenerate images.

Degenerate candidate (one H x W x C image of one slot of one anchor): every pixel value of every
channel is the same, i.e. zero variance. It is counted as
- `constant`: all such images;
- `all_black`: the constant images whose value is 0;
- `all_white`: the constant images whose value is 255.
A sample that became NaN in the sampler cannot be told apart after the fact: a NaN spreads through
the UNet's convolutions and group norms to the whole image, and clipping then casting to uint8 turns
it into one value everywhere (0 on CPUs and CUDA GPUs), so NaN-born samples are among `constant`
(usually `all_black`). Real training images are almost never constant, so any count here deserves
a look (`first` lists where the first few are).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clsp.io import write_json_atomic
from clsp.positives.strength import summarise

STATS = "stats.json"
MAX_LISTED = 20


def constant_mask(images: np.ndarray) -> np.ndarray:
    """True for each image (the last three axes are H, W, C) whose pixels all hold one value."""
    flat = images.reshape(*images.shape[:-3], -1)
    return flat.min(axis=-1) == flat.max(axis=-1)


def store_stats(store) -> dict:
    """Statistics of an open PositivesStore, computed chunk by chunk (memory-mapped)."""
    k = store.k
    count = np.zeros(k, np.int64)
    total = np.zeros(k, np.float64)
    total_sq = np.zeros(k, np.float64)
    low = np.full(k, 255, np.int64)
    high = np.zeros(k, np.int64)
    constant = np.zeros(k, np.int64)
    black = np.zeros(k, np.int64)
    white = np.zeros(k, np.int64)
    listed: list[dict] = []
    start = 0
    for chunk in store.chunk_arrays():
        chunk = np.asarray(chunk)                              # (n, K, H, W, C)
        pixels = chunk.reshape(len(chunk), k, -1)
        count += pixels.shape[0] * pixels.shape[2]
        total += pixels.sum(axis=(0, 2), dtype=np.float64)
        total_sq += np.square(pixels, dtype=np.uint32).sum(axis=(0, 2), dtype=np.float64)
        low = np.minimum(low, pixels.min(axis=(0, 2)))
        high = np.maximum(high, pixels.max(axis=(0, 2)))
        is_constant = constant_mask(chunk)                     # (n, K)
        value = pixels[:, :, 0]
        constant += is_constant.sum(axis=0)
        black += (is_constant & (value == 0)).sum(axis=0)
        white += (is_constant & (value == 255)).sum(axis=0)
        for row, slot in zip(*np.nonzero(is_constant)):
            if len(listed) < MAX_LISTED:
                listed.append({"index": int(start + row), "slot": int(slot), "value": int(value[row, slot])})
        start += len(chunk)
    mean = total / np.maximum(count, 1)
    std = np.sqrt(np.maximum(total_sq / np.maximum(count, 1) - mean ** 2, 0.0))
    slots = [{"slot": s, "mean": round(float(mean[s]), 4), "std": round(float(std[s]), 4), "min": int(low[s]),
              "max": int(high[s]), "constant": int(constant[s])} for s in range(k)]
    images = store.n * k
    strength = store.strength() if store.has_strength else None
    return {
        "store": str(store.path),
        "n": store.n, "k": k, "image_shape": list(store.image_shape),
        "bytes_on_disk": disk_size(store.path),
        "slots": slots,
        "degenerate": {"images": images, "constant": int(constant.sum()), "all_black": int(black.sum()),
                       "all_white": int(white.sum()), "fraction": float(constant.sum()) / max(images, 1),
                       "first": listed},
        # per candidate: the partial-noise start it was made with and its label-free cosine to its anchor
        "strength": None if strength is None else {
            **summarise(strength["start"], strength["similarity"]),
            "space": store.manifest["generation"]["strength"]["space"]},
    }


def disk_size(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def write_stats(store, extra_path: str | Path | None = None) -> dict:
    """Compute the statistics and write them to stats.json beside the manifest (and to `extra_path`)."""
    stats = store_stats(store)
    write_json_atomic(Path(store.path) / STATS, stats)
    if extra_path is not None:
        write_json_atomic(extra_path, stats)
    return stats


def format_stats(stats: dict) -> str:
    """A short table for the terminal."""
    h, w, c = stats["image_shape"]
    d = stats["degenerate"]
    lines = [f"store {stats['store']}: {stats['n']:,} images x K={stats['k']} of {h}x{w}x{c}, "
             f"{stats['bytes_on_disk'] / 2**20:,.1f} MiB on disk",
             f"{'slot':>4} {'mean':>8} {'std':>8} {'min':>4} {'max':>4} {'constant':>9}"]
    for s in stats["slots"]:
        lines.append(f"{s['slot']:>4} {s['mean']:>8.2f} {s['std']:>8.2f} {s['min']:>4} {s['max']:>4} {s['constant']:>9}")
    lines.append(f"degenerate (constant) images: {d['constant']:,} of {d['images']:,} ({100 * d['fraction']:.3f}%), "
                 f"all black {d['all_black']:,}, all white {d['all_white']:,}"
                 + (" (NaN-born samples appear as constant, usually all-black, images)" if d["constant"] else ""))
    st = stats.get("strength")
    if st:
        shares = ", ".join(f"s = {v}: {100 * share:.1f}%" for v, share in sorted(st["start_share"].items(), reverse=True))
        sim = st["similarity"]
        lines.append(f"partial-noise start per candidate: {shares}; cosine to the anchor ({st['space']} space): "
                     f"mean {sim['mean']:.3f}, median {sim['q50']:.3f}, 5-95% {sim['q5']:.3f} .. {sim['q95']:.3f}")
    return "\n".join(lines)
