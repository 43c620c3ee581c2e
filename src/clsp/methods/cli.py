"""`clsp pretrain --config PRESET [key=value ...]`: self-supervised pretraining (stage 3)."""

from __future__ import annotations

import argparse
import os


def register(subparsers) -> None:
    from clsp.cli import add_config_arguments

    parser = subparsers.add_parser(
        "pretrain", help="train an encoder with SimCLR / MoCo v2+ / NNCLR / All4One, with or without the CLSP term",
        description="Self-supervised pretraining. Presets live under configs/pretrain/ (e.g. pretrain/demo, "
                    "pretrain/cifar10-simclr-clsp). Set clsp.positives=STORE for CLSP runs. An interrupted run "
                    "resumes from OUT_DIR/checkpoints/last.ckpt; a finished one is skipped.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from clsp.config import load_config
    from clsp.methods.pretrain import PretrainConfig, pretrain

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    out = pretrain(cfg)
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:  # DDP runs this on every rank
        print(out / "encoder.safetensors")
    return 0
