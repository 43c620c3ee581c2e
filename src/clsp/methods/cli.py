"""`clsp pretrain --config PRESET [key=value ...]`: self-supervised pretraining (stage 3)."""

from __future__ import annotations

import os


def register(subparsers) -> None:
    from clsp.cli import TRAINING_FLAGS, add_command, config_command
    from clsp.methods.config import PretrainConfig

    parser = add_command(
        subparsers, "pretrain",
        description="Self-supervised pretraining. Presets live under configs/pretrain/ (e.g. demo, "
                    "cifar10-simclr-clsp). Set clsp.positives=STORE for CLSP runs. An interrupted run "
                    "resumes from OUT_DIR/checkpoints/last.ckpt; a finished one is skipped.")
    config_command(parser, PretrainConfig, run, presets="pretrain",
                   flags=TRAINING_FLAGS,
                   examples=["clsp pretrain --config demo --out runs/pretrain-demo",
                             "clsp pretrain --config cifar10-simclr-clsp clsp.positives=runs/positives trainer.devices=8"])


def run(cfg) -> int:
    from clsp.methods.pretrain import pretrain

    out = pretrain(cfg)
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:  # DDP runs this on every rank
        print(out / "encoder.safetensors")
    return 0
