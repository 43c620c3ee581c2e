"""Self-supervised pretraining: SimCLR, MoCo v2+, NNCLR and All4One on one Lightning base, each with
or without the CLSP term (a synthetic positive pulled towards its anchor); and SupCon, the supervised
reference that uses the labels."""

from __future__ import annotations

import importlib

METHODS = {
    "simclr": "clsp.methods.simclr:SimCLR",
    "moco": "clsp.methods.moco:MoCo",
    "nnclr": "clsp.methods.nnclr:NNCLR",
    "all4one": "clsp.methods.all4one:All4One",
    "supcon": "clsp.methods.supcon:SupCon",
}


def method_class(name: str):
    """The LightningModule class of a method name (imported on demand: torch and Lightning are heavy)."""
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)
