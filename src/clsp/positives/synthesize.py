"""Stage 2 for a whole split: K synthetic positives for every image, written chunk by chunk to a store.

The split is cut into chunks of `chunk_size` images in dataset order. Chunk i is generated with
seed hash(seed, i), so its bytes depend only on the settings and i: a resumed job, or one spread
over several processes (torchrun; each rank takes every world-th remaining chunk), writes exactly
the bytes of an uninterrupted single-process job (on the same kind of device).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
from pathlib import Path

import numpy as np

from clsp.config import to_dict, to_yaml
from clsp.diffusion.sampler import generate_positives
from clsp.errors import UserError
from clsp.positives.config import SynthesizeConfig

log = logging.getLogger("clsp")


def chunk_seed(seed: int, chunk: int) -> int:
    """The generation seed of one chunk: a hash of (seed, chunk index)."""
    from clsp.training import step_seed

    return step_seed(seed, chunk, stream="positives")


def distributed_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def pick_device(device: str, local_rank: int):
    """cpu; or a GPU: the one named (cuda:N), else the process's own under torchrun (LOCAL_RANK)."""
    import torch

    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"device={device} but no CUDA device is visible; pass --device cpu")
    chosen = torch.device(device) if device.startswith("cuda:") else torch.device("cuda", local_rank)
    torch.cuda.set_device(chosen)
    return chosen


def describe_work(n: int, k: int, steps: int, share_anchor: bool) -> str:
    anchor_passes = n * steps if share_anchor else n * k * steps
    return (f"{n:,} images x K={k} x {steps} steps = {n * k * steps:,} UNet evaluations "
            f"(+ {anchor_passes:,} anchor down/mid passes)")


def estimate_on_cpu(unet, scheduler_config: dict, dataset, cfg: SynthesizeConfig, images: int, probe_steps: int = 2) -> None:
    """Time `probe_steps` denoising steps on a few anchors and say how long `images` anchors will take
    (when that is more than a minute): on a CPU a GPU preset would otherwise start silently for hours."""
    import time

    import torch

    from clsp.training import format_duration

    per_batch = max(1, min(cfg.sampler.batch_size // cfg.k, images, 16))
    if images * cfg.sampler.steps < 20 * per_batch * probe_steps:  # a small job: the probe would cost more than it says
        return
    anchors = torch.from_numpy(dataset.images_at(np.arange(per_batch)))
    started = time.perf_counter()
    generate_positives(unet, scheduler_config, anchors, cfg.k, dataclasses.replace(cfg.sampler, steps=probe_steps, start=1.0),
                       seed=cfg.seed, device="cpu", anchor_labels=anchor_labels(unet, dataset, cfg, per_batch))
    per_image_step = (time.perf_counter() - started) / (per_batch * probe_steps)
    total = per_image_step * images * steps_per_image(cfg)
    if total > 60:
        log.info(f"synthesize: {probe_steps} steps for {per_batch} images took {per_image_step * per_batch * probe_steps:.1f} s; "
                 f"{images:,} images x {steps_per_image(cfg):g} steps will take about {format_duration(total)} on this cpu")


def steps_per_image(cfg: SynthesizeConfig) -> float:
    """Denoising steps a candidate runs: floor(start * steps), and with the per-candidate rule at most the sum over
    its grid (every grid value tried: an upper bound)."""
    from clsp.diffusion.sampler import steps_run

    if cfg.strength.active:
        return sum(steps_run(cfg.sampler.steps, s) for s in cfg.strength.grid)
    return steps_run(cfg.sampler.steps, cfg.sampler.start)


def anchor_labels(unet, dataset, cfg: SynthesizeConfig, stop: int | None = None):
    """The anchors' classes (the first `stop`), which a class-conditional model samples; None for an unconditional one."""
    import torch

    from clsp.diffusion.sampler import is_conditional, null_class

    if not is_conditional(unet):
        return None
    if dataset.labels is None:
        raise UserError(f"the diffusion model is class-conditional and samples each anchor's class, but {dataset.name} "
                        f"split '{cfg.split}' has no labels; use a labelled split or an unconditional model")
    if len(dataset.classes) != null_class(unet):
        raise UserError(f"the diffusion model knows {null_class(unet)} classes but {dataset.name} has {len(dataset.classes)}; "
                        "use the model trained on this dataset")
    return torch.from_numpy(dataset.labels[:stop]).long()


def make_chunk(unet, scheduler_config: dict, anchors, cfg: SynthesizeConfig, seed: int, device, labels, features):
    """One chunk's candidates, uint8 (n, K, H, W, C), and its strength record, float32 (n, K, 2): each candidate's
    start s and label-free cosine to its anchor. With `strength.grid` the rule picks s per candidate; without it
    every candidate has `sampler.start` and the cosine is only measured."""
    import torch

    from clsp.positives.strength import cosine_to_anchor, generate_with_strength

    if cfg.strength.active:
        candidates, start, similarity = generate_with_strength(unet, scheduler_config, anchors, cfg.k, cfg.sampler,
                                                               cfg.strength, seed, device, labels, features)
    else:
        candidates = generate_positives(unet, scheduler_config, anchors, cfg.k, cfg.sampler, seed=seed, device=device,
                                        anchor_labels=labels).cpu()
        similarity = cosine_to_anchor(features, anchors, candidates)
        start = torch.full_like(similarity, cfg.sampler.start)
    return candidates.numpy(), torch.stack([start, similarity], dim=-1).numpy().astype(np.float32)


def _absolute(cfg: SynthesizeConfig) -> SynthesizeConfig:
    """The config with paths made absolute, so the recorded config resumes from any directory."""
    root = cfg.dataset.root
    dataset = dataclasses.replace(cfg.dataset, root=None if root is None else str(Path(root).resolve()))
    from clsp.diffusion.model import resolve_model_dir

    return dataclasses.replace(cfg, model=str(resolve_model_dir(cfg.model).resolve()),
                               out_dir=str(Path(cfg.out_dir).resolve()), dataset=dataset)


def synthesize(cfg: SynthesizeConfig) -> Path:
    """Generate (or finish generating) the store `cfg.out_dir`; returns its path once complete. One job at a
    time per store (the ranks of a torchrun job share their rank 0's lock)."""
    from clsp.lock import run_lock

    with run_lock(cfg.out_dir):
        return _synthesize(cfg)


def _synthesize(cfg: SynthesizeConfig) -> Path:
    import torch
    import torch.distributed as dist
    from tqdm.auto import tqdm

    from clsp.data.config import load_split
    from clsp.diffusion.model import check_model_matches, load_model
    from clsp.diffusion.sampler import check_guidance
    from clsp.io import hash_directory
    from clsp.positives.store import StoreWriter, anchor_record, chunk_bounds, dataset_record, new_manifest
    from clsp.positives.strength import Features
    from clsp.rundir import git_commit, package_versions

    cfg = _absolute(cfg)                                      # a clsp:NAME model becomes its directory
    rank, world, local_rank = distributed_env()
    dataset = load_split(cfg.dataset, cfg.split)
    unet, scheduler_config = load_model(cfg.model)
    check_model_matches(unet, dataset.shape[0], channels=dataset.shape[2])
    check_guidance(unet, cfg.sampler)
    labels = anchor_labels(unet, dataset, cfg)
    generation = {"k": cfg.k, "seed": cfg.seed, "chunk_size": cfg.chunk_size, "sampler": to_dict(cfg.sampler),
                  "strength": to_dict(cfg.strength)}
    sources = {"model_dir": str(Path(cfg.model).resolve()), "dataset_config": to_dict(cfg.dataset), "split": cfg.split}
    versions = dict(package_versions(), git_commit=git_commit())
    anchors = anchor_record(len(dataset), dataset.images_at, dataset.labels, getattr(dataset, "files", None))
    writer = StoreWriter(cfg.out_dir, new_manifest(dataset_record(dataset), hash_directory(cfg.model), generation, sources, versions,
                                                   anchors), rank=rank, world=world)

    if world > 1:  # gloo serves as a barrier only: every rank reads the store's state before any rank writes
        dist.init_process_group("gloo", timeout=_dt.timedelta(hours=12))
        dist.barrier()
    writer.start(to_yaml(cfg))
    n = len(dataset)
    if rank == 0:
        todo = sum(stop - start for start, stop in (chunk_bounds(i, n, cfg.chunk_size) for i in writer.todo_at_open))
        log.info(f"synthesize: {describe_work(n, cfg.k, cfg.sampler.steps, cfg.sampler.share_anchor)}; "
                 f"{writer.total} chunks of {cfg.chunk_size}, {writer.total - len(writer.todo_at_open)} already complete, "
                 f"{todo:,} images to do on {world} process(es) -> {cfg.out_dir}")

    mine = writer.my_chunks()
    if world > 1:
        log.info(f"synthesize: rank {rank}/{world}: {len(mine)} chunks")
    device = pick_device(cfg.device, local_rank)
    unet = unet.to(device).eval()
    bounds = [chunk_bounds(i, n, cfg.chunk_size) for i in mine]
    features = Features(cfg.strength.space, unet)
    if rank == 0 and device.type == "cpu" and bounds:
        estimate_on_cpu(unet, scheduler_config, dataset, cfg, sum(stop - start for start, stop in bounds))
    with tqdm(total=sum(stop - start for start, stop in bounds), unit="img", desc="synthesize", dynamic_ncols=True,
              disable=not cfg.progress or rank != 0) as bar:
        for index, (start, stop) in zip(mine, bounds):
            anchors = torch.from_numpy(dataset.images_at(np.arange(start, stop)))
            candidates, strength = make_chunk(unet, scheduler_config, anchors, cfg, chunk_seed(cfg.seed, index), device,
                                              None if labels is None else labels[start:stop], features)
            writer.write_chunk(index, candidates, strength)
            bar.update(stop - start)

    if world > 1:  # rank 0 completes the manifest once every rank's chunks are on disk
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        manifest = writer.finish()
        if not manifest["complete"]:
            raise UserError(f"positives store {cfg.out_dir} is still incomplete ({len(manifest['complete_chunks'])} of "
                            f"{manifest['chunks_total']} chunks); run the same command again to finish it")
        log.info(f"synthesize: store complete: {cfg.out_dir}")
    return Path(cfg.out_dir)
