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
from dataclasses import dataclass
from pathlib import Path

from clsp.config import check, check_choice, check_positive, field, to_dict, to_yaml
from clsp.data.config import DatasetConfig
from clsp.diffusion.sampler import SamplerConfig, generate_positives
from clsp.errors import UserError

log = logging.getLogger("clsp")


@dataclass
class SynthesizeConfig:
    model: str = ""                   # diffusion model directory (diffusers layout; `clsp diffusion train` makes one)
    dataset: DatasetConfig = field(DatasetConfig)
    split: str = "train"              # the split whose images become anchors
    k: int = 8                        # candidates per image
    sampler: SamplerConfig = field(SamplerConfig)  # sampler, steps, eta, w (interpolation weight), batch_size, ...
    seed: int = 0
    chunk_size: int = 512             # images per chunk file (the unit of resume and of work per rank)
    out: str = ""                     # the store directory
    accelerator: str = "auto"         # auto | cpu | gpu; under torchrun each process uses the GPU of its LOCAL_RANK
    progress: bool = True

    def __post_init__(self) -> None:
        check(bool(self.model), "model", "must name a diffusion model directory (--model DIR)")
        check(bool(self.out), "out", "must name the store directory to write (--out STORE)")
        check_positive(self.k, "k")
        check_positive(self.chunk_size, "chunk_size")
        check_choice(self.accelerator, "accelerator", ["auto", "cpu", "gpu", "cuda"])


def chunk_seed(seed: int, chunk: int) -> int:
    """The generation seed of one chunk: a hash of (seed, chunk index)."""
    from clsp.training import step_seed

    return step_seed(seed, chunk, stream="positives")


def distributed_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def pick_device(accelerator: str, local_rank: int):
    import torch

    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"accelerator={accelerator} but no CUDA device is visible; pass accelerator=cpu")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def describe_work(n: int, k: int, steps: int, share_anchor: bool) -> str:
    anchor_passes = n * steps if share_anchor else n * k * steps
    return (f"{n:,} images x K={k} x {steps} steps = {n * k * steps:,} UNet evaluations "
            f"(+ {anchor_passes:,} anchor down/mid passes)")


def _absolute(cfg: SynthesizeConfig) -> SynthesizeConfig:
    """The config with paths made absolute, so the recorded config resumes from any directory."""
    root = cfg.dataset.root
    dataset = dataclasses.replace(cfg.dataset, root=None if root is None else str(Path(root).resolve()))
    from clsp.diffusion.model import resolve_model_dir

    return dataclasses.replace(cfg, model=str(resolve_model_dir(cfg.model).resolve()), out=str(Path(cfg.out).resolve()),
                               dataset=dataset)


def synthesize(cfg: SynthesizeConfig) -> Path:
    """Generate (or finish generating) the store `cfg.out`; returns its path once complete. One job at a
    time per store (the ranks of a torchrun job share their rank 0's lock)."""
    from clsp.lock import run_lock

    with run_lock(cfg.out):
        return _synthesize(cfg)


def _synthesize(cfg: SynthesizeConfig) -> Path:
    import torch
    import torch.distributed as dist
    from tqdm.auto import tqdm

    from clsp.data.config import load_split
    from clsp.diffusion.model import check_model_matches, load_model
    from clsp.io import hash_directory
    from clsp.positives.store import StoreWriter, anchor_images, chunk_bounds, dataset_record, new_manifest
    from clsp.rundir import git_commit, package_versions

    cfg = _absolute(cfg)                                      # a clsp:NAME model becomes its directory
    rank, world, local_rank = distributed_env()
    dataset = load_split(cfg.dataset, cfg.split)
    unet, scheduler_config = load_model(cfg.model)
    check_model_matches(unet, dataset.shape[0], channels=dataset.shape[2])
    generation = {"k": cfg.k, "seed": cfg.seed, "chunk_size": cfg.chunk_size, "sampler": to_dict(cfg.sampler)}
    sources = {"model_dir": str(Path(cfg.model).resolve()), "dataset_config": to_dict(cfg.dataset), "split": cfg.split}
    versions = dict(package_versions(), git_commit=git_commit())
    writer = StoreWriter(cfg.out, new_manifest(dataset_record(dataset), hash_directory(cfg.model), generation, sources, versions),
                         rank=rank, world=world)

    if world > 1:  # gloo serves as a barrier only: every rank reads the store's state before any rank writes
        dist.init_process_group("gloo", timeout=_dt.timedelta(hours=12))
        dist.barrier()
    writer.start(to_yaml(cfg))
    n = len(dataset)
    if rank == 0:
        todo = sum(stop - start for start, stop in (chunk_bounds(i, n, cfg.chunk_size) for i in writer.todo_at_open))
        log.info(f"synthesize: {describe_work(n, cfg.k, cfg.sampler.steps, cfg.sampler.share_anchor)}; "
                 f"{writer.total} chunks of {cfg.chunk_size}, {writer.total - len(writer.todo_at_open)} already complete, "
                 f"{todo:,} images to do on {world} process(es) -> {cfg.out}")

    mine = writer.my_chunks()
    if world > 1:
        log.info(f"synthesize: rank {rank}/{world}: {len(mine)} chunks")
    device = pick_device(cfg.accelerator, local_rank)
    unet = unet.to(device).eval()
    bounds = [chunk_bounds(i, n, cfg.chunk_size) for i in mine]
    with tqdm(total=sum(stop - start for start, stop in bounds), unit="img", desc="synthesize", dynamic_ncols=True,
              disable=not cfg.progress or rank != 0) as bar:
        for index, (start, stop) in zip(mine, bounds):
            anchors = torch.from_numpy(anchor_images(dataset, start, stop))
            candidates = generate_positives(unet, scheduler_config, anchors, cfg.k, cfg.sampler,
                                            seed=chunk_seed(cfg.seed, index), device=device)
            writer.write_chunk(index, candidates.cpu().numpy())
            bar.update(stop - start)

    if world > 1:  # rank 0 completes the manifest once every rank's chunks are on disk
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        manifest = writer.finish()
        if not manifest["complete"]:
            raise UserError(f"positives store {cfg.out} is still incomplete ({len(manifest['complete_chunks'])} of "
                            f"{manifest['chunks_total']} chunks); run the same command again to finish it")
        log.info(f"synthesize: store complete: {cfg.out}")
    return Path(cfg.out)
