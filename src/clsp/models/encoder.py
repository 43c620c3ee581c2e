"""The encoder file: the contract between pretraining (writes) and evaluation (reads).

`encoder.safetensors` holds the backbone weights (avgpool features, no fc) and, in the safetensors
metadata, a JSON `meta` with at least: arch, stem, feat_dim, dataset, image_size, mean, std, method,
clsp_lambda; width when it is not the standard 64; and for a timm model (arch `timm:NAME`) the timm version it
was written with. Evaluation rebuilds the backbone from the meta (`make_backbone(arch, stem, width, image_size)`:
a ViT is built for image_size), loads the weights strictly and normalises inputs with its mean/std.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clsp.errors import UserError
from clsp.io import atomic_path
from clsp.layout import ENCODER_FILE

REQUIRED_META = ("arch", "stem", "feat_dim", "image_size", "mean", "std")


def save_encoder(path: str | Path, backbone: nn.Module, meta: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    missing = [k for k in REQUIRED_META if k not in meta]
    assert not missing, f"encoder meta lacks {missing}"
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"meta": json.dumps(meta)})
    return path


def resolve_encoder_path(path: str | Path) -> Path:
    """Accept the encoder file itself or a pretraining run directory that holds one."""
    p = Path(path)
    if p.is_dir():
        p = p / ENCODER_FILE
    if not p.is_file():
        raise UserError(f"no encoder at {path}: give the {ENCODER_FILE} that `clsp pretrain` writes, or its run directory")
    if p.suffix != ".safetensors":
        run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
        raise UserError(f"{path} is not an encoder file but {'a training checkpoint' if p.suffix == '.ckpt' else 'another file'}; "
                        f"give {run / ENCODER_FILE} (written when pretraining finishes), or the run directory {run}")
    return p


def read_meta(path: str | Path) -> dict[str, Any]:
    from safetensors import safe_open

    p = resolve_encoder_path(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to replace
        raise UserError(f"{p} is not a readable encoder file ({e})") from None
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise UserError(f"{p} lacks encoder metadata {missing}; was it written by `clsp pretrain`?")
    return meta


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the backbone described by the file's meta, load its weights (strict), put it in eval mode."""
    from safetensors.torch import load_file

    from clsp.models.backbones import backbone_record, make_backbone

    p = resolve_encoder_path(path)
    meta = read_meta(p)
    backbone, _ = make_backbone(meta["arch"], meta["stem"], int(meta.get("width", 64)), int(meta["image_size"]))
    written, here = meta.get("timm_version"), backbone_record(meta["arch"]).get("timm_version")
    try:
        backbone.load_state_dict(load_file(str(p)))
    except RuntimeError as e:
        if written == here:
            raise
        raise UserError(f"{p} holds a {meta['arch']} written with timm {written}, whose weights do not fit the one "
                        f"timm {here} builds ({str(e).splitlines()[0]}); install timm=={written}") from None
    if written != here:
        logging.getLogger("clsp").warning(f"{p} was written with timm {written}, this is timm {here}; its weights fit")
    return backbone.to(device).eval(), meta
