"""`clsp synthesize` (make a positives store) and `clsp positives preview|stats` (look at one)."""

from __future__ import annotations

import argparse

# --flag -> config key of SynthesizeConfig; flags left out keep the preset's (or the default) value.
SYNTHESIZE_FLAGS = {
    "model": ("model", str, "diffusion model directory (diffusers layout)"),
    "dataset": ("dataset.name", str, "dataset name (see `clsp data info`) or folder:PATH"),
    "split": ("split", str, "split to synthesize positives for (default train)"),
    "root": ("dataset.root", str, "where the dataset's files are"),
    "size": ("dataset.size", int, "image side the dataset is loaded at"),
    "subset": ("dataset.subset", int, "use a fixed random subset of this many images"),
    "k": ("k", int, "candidates per image (default 8)"),
    "w": ("sampler.w", float, "interpolation weight of the sample's own bottleneck (paper: 0.1)"),
    "out": ("out", str, "the store directory to write (or resume)"),
    "sampler": ("sampler.sampler", str, "sampler name (e.g. ddim)"),
    "steps": ("sampler.steps", int, "denoising steps (paper: 100)"),
    "eta": ("sampler.eta", float, "DDIM eta (paper: 0.1)"),
    "batch_size": ("sampler.batch_size", int, "samples per UNet batch"),
    "seed": ("seed", int, "generation seed (each chunk's seed is a hash of it and the chunk index)"),
    "chunk_size": ("chunk_size", int, "images per chunk file (the unit of resume)"),
    "accelerator": ("accelerator", str, "auto | cpu | gpu"),
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synthesize", help="generate K synthetic positives for every image of a split into a store",
        description="Generate K candidates per image with the interpolating sampler, chunk by chunk. Re-running "
                    "the same command resumes an interrupted store. Several processes: torchrun --nproc_per_node N "
                    "-m clsp synthesize ...")
    for flag, (key, kind, text) in SYNTHESIZE_FLAGS.items():
        p.add_argument("--" + flag.replace("_", "-"), dest=flag, type=kind, default=None, help=f"{text} [{key}]")
    p.add_argument("--config", default=None, help="YAML preset: a path, or a name under configs/")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. sampler.share_anchor=true")
    p.set_defaults(func=run_synthesize)

    pos = subparsers.add_parser("positives", help="look at a positives store: preview grid, statistics")
    sub = pos.add_subparsers(dest="positives_command", metavar="ACTION", required=True)

    pv = sub.add_parser("preview", help="anchors beside their K candidates, as a PNG")
    pv.add_argument("store")
    pv.add_argument("--dataset", default=None, help="dataset name (default: the one recorded in the store)")
    pv.add_argument("--split", default=None)
    pv.add_argument("--root", default=None)
    pv.add_argument("--size", type=int, default=None)
    pv.add_argument("--subset", type=int, default=None)
    pv.add_argument("--out", required=True, help="PNG file to write")
    pv.add_argument("--n", type=int, default=8, help="number of anchors (rows)")
    pv.set_defaults(func=run_preview)

    st = sub.add_parser("stats", help="size on disk, pixel statistics per slot, degenerate images")
    st.add_argument("store")
    st.add_argument("--json", default=None, help="also write the statistics to this file (stats.json is always "
                                                 "written beside the manifest)")
    st.set_defaults(func=run_stats)


def synthesize_config(args: argparse.Namespace):
    """The flags, the preset and the key=value overrides, merged and validated as one config."""
    from clsp.config import load_config
    from clsp.positives.synthesize import SynthesizeConfig

    extra: dict = {}
    for flag, (key, _, _) in SYNTHESIZE_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            *parents, leaf = key.split(".")
            node = extra
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    return load_config(SynthesizeConfig, args.config, args.overrides, extra=extra)


def run_synthesize(args: argparse.Namespace) -> int:
    from clsp.positives.synthesize import synthesize

    synthesize(synthesize_config(args))
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from clsp.config import load_config
    from clsp.data.config import DatasetConfig, load_split
    from clsp.errors import UserError
    from clsp.positives.preview import preview
    from clsp.positives.store import read_manifest

    manifest = read_manifest(args.store)
    if manifest is None:
        raise UserError(f"{args.store} is not a positives store (no manifest.json)")
    recorded = manifest.get("sources", {}).get("dataset_config")
    if args.dataset is None and recorded is None:
        raise UserError(f"{args.store} does not record its dataset's settings; pass --dataset NAME (and --root, --size, --subset)")
    given = {k: v for k, v in {"name": args.dataset, "root": args.root, "size": args.size, "subset": args.subset}.items()
             if v is not None}
    dataset_cfg = load_config(DatasetConfig, extra=given if args.dataset else {**recorded, **given})
    dataset = load_split(dataset_cfg, args.split or manifest["dataset"]["split"])
    path = preview(args.store, dataset, args.out, args.n)
    print(f"wrote {path}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from clsp.positives.stats import format_stats, write_stats
    from clsp.positives.store import PositivesStore

    stats = write_stats(PositivesStore.open(args.store), args.json)
    print(format_stats(stats))
    return 0
