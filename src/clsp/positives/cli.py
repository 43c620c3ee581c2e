"""`clsp synthesize` (make a positives store) and `clsp positives preview|stats` (look at one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from clsp.config import check, check_given, check_positive
from clsp.data.config import DatasetConfig


@dataclass
class PreviewConfig:
    """`clsp positives preview`: anchors beside their K candidates, as OUT_DIR/preview.png."""

    store: str = ""
    dataset: Optional[DatasetConfig] = None   # the anchors' dataset; None: the one the store records
    split: Optional[str] = None               # None: the store's split
    n: int = 8                                # anchors (rows)
    out_dir: str = ""

    def __post_init__(self) -> None:
        check(bool(self.store), "store", "must name a positives store directory")
        check_given(bool(self.out_dir), "out_dir", "must name the directory to write preview.png into (--out DIR)")
        check_positive(self.n, "n")


@dataclass
class StatsConfig:
    """`clsp positives stats`: size on disk, pixel statistics per slot, degenerate images (-> STORE/stats.json)."""

    store: str = ""
    json: bool = False                        # print the statistics as JSON instead of a table

    def __post_init__(self) -> None:
        check(bool(self.store), "store", "must name a positives store directory")


def register(subparsers) -> None:
    from clsp.cli import Flag, add_command, config_command, model_sampler
    from clsp.positives.config import SynthesizeConfig

    p = add_command(subparsers, "synthesize",
                    description="Generate K candidates per image with the interpolating sampler, chunk by chunk. "
                                "Re-running the same command resumes an interrupted store. Several processes: "
                                "torchrun --nproc_per_node N -m clsp synthesize ...")
    config_command(p, SynthesizeConfig, run_synthesize, presets="synthesize", defaults=model_sampler("sampler", "model"), flags={
        "--model": Flag("model", "diffusion model directory (diffusers layout)"),
        "--dataset": Flag("dataset.name", "dataset name (see `clsp data info`) or folder:PATH"),
        "--split": Flag("split", "split to synthesize positives for"),
        "--root": Flag("dataset.root", "where the dataset's files are"),
        "--size": Flag("dataset.size", "image side the dataset is loaded at"),
        "--subset": Flag("dataset.subset", "use a fixed random subset of this many images"),
        "--k": Flag("k", "candidates per image"),
        "--w": Flag("sampler.w", "interpolation weight of the sample's own bottleneck (paper: 0.1)"),
        "--start": Flag("sampler.start", "partial-noise start s in (0, 1]: denoise from the anchor noised to ~s*T (1: pure noise)"),
        "--guidance": Flag("sampler.guidance", "classifier-free guidance of a class-conditional model (release: 1.8)"),
        "--out": Flag("out_dir", "the store directory to write (or resume)"),
        "--sampler": Flag("sampler.sampler", "ddim | ddpm | dpmsolver++ | unipc"),
        "--steps": Flag("sampler.steps", "denoising steps (paper: 100)"),
        "--eta": Flag("sampler.eta", "DDIM eta (paper: 0.1)"),
        "--batch-size": Flag("sampler.batch_size", "samples per UNet batch"),
        "--seed": Flag("seed", "generation seed (each chunk's seed is a hash of it and the chunk index)"),
        "--chunk-size": Flag("chunk_size", "images per chunk file (the unit of resume)"),
        "--device": Flag("device", "auto | cpu | cuda | cuda:N"),
    }, examples=["clsp synthesize --model runs/diffusion/model --dataset fashion-mnist --k 8 --w 0.1 --out runs/positives",
                 "clsp synthesize --config cifar10 --model runs/diffusion/model --out runs/positives sampler.share_anchor=true",
                 "clsp synthesize --model clsp:fashion-mnist-16 --dataset fashion-mnist --size 16 --out runs/pos-s "
                 "sampler.layers=4 'strength.grid=[0.8,0.6,0.4]' strength.floor=0.6",
                 "clsp synthesize --config cifar10-conditional --model runs/cond/model --out runs/positives-cond"])

    pos = add_command(subparsers, "positives")
    sub = pos.add_subparsers(dest="positives_command", metavar="ACTION", required=True)
    pv = sub.add_parser("preview", help="anchors beside their K candidates, as a PNG")
    config_command(pv, PreviewConfig, run_preview, positionals={"STORE": Flag("store", "a positives store directory")}, flags={
        "--dataset": Flag("dataset.name", "the anchors' dataset (default: the one recorded in the store)"),
        "--split": Flag("split", "the anchors' split (default: the store's)"),
        "--root": Flag("dataset.root", "with --dataset: where its files are"),
        "--size": Flag("dataset.size", "with --dataset: the image side"),
        "--subset": Flag("dataset.subset", "with --dataset: its subset"),
        "--out": Flag("out_dir", "the directory to write preview.png into"),
        "--n": Flag("n", "number of anchors (rows)"),
    }, examples=["clsp positives preview runs/positives --out runs/preview"])
    st = sub.add_parser("stats", help="size on disk, pixel statistics per slot, degenerate images")
    config_command(st, StatsConfig, run_stats, positionals={"STORE": Flag("store", "a positives store directory")},
                   flags={"--json": Flag("json", "print the statistics as JSON (STORE/stats.json is always written)")},
                   examples=["clsp positives stats runs/positives"])


def run_synthesize(cfg) -> int:
    import signal

    from clsp.positives.synthesize import synthesize

    previous = signal.signal(signal.SIGTERM, _interrupt)  # as the training stages: "clsp: interrupted", exit 130
    try:
        synthesize(cfg)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum, frame) -> None:
    """SIGTERM (a scheduler, `kill`) ends the job as Ctrl-C does; the store keeps its finished chunks."""
    raise KeyboardInterrupt


def run_preview(cfg: PreviewConfig) -> int:
    from pathlib import Path

    from clsp.config import load_config
    from clsp.data.config import load_split
    from clsp.errors import UserError
    from clsp.positives.preview import preview
    from clsp.positives.store import read_manifest

    manifest = read_manifest(cfg.store)
    if manifest is None:
        raise UserError(f"{cfg.store} is not a positives store (no manifest.json)")
    dataset_cfg = cfg.dataset
    if dataset_cfg is None:
        recorded = manifest.get("sources", {}).get("dataset_config")
        if recorded is None:
            raise UserError(f"{cfg.store} does not record its dataset's settings; pass --dataset NAME (and --root, "
                            "--size, --subset)")
        dataset_cfg = load_config(DatasetConfig, extra=recorded)
    dataset = load_split(dataset_cfg, cfg.split or manifest["dataset"]["split"])
    path = preview(cfg.store, dataset, Path(cfg.out_dir) / "preview.png", cfg.n)
    print(f"wrote {path}")
    return 0


def run_stats(cfg: StatsConfig) -> int:
    import json

    from clsp.positives.stats import format_stats, write_stats
    from clsp.positives.store import PositivesStore

    stats = write_stats(PositivesStore.open(cfg.store))
    print(json.dumps(stats, indent=2) if cfg.json else format_stats(stats))
    return 0
