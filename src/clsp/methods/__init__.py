"""Self-supervised pretraining: SimCLR, MoCo v2+, NNCLR, All4One and BYOL on one Lightning base, each
with or without the CLSP term (a synthetic positive pulled towards its anchor); and SupCon, the supervised
reference that uses the labels.

`METHODS` is the one list of methods: a method is its file here (its class), its line below, and its
config section if it has one in `clsp.methods.config` (torch-free, for instant --help). What the rest needs to know of it (labels, memory bank and the key of its
size) the class declares."""

from __future__ import annotations

import importlib

METHODS = {
    "simclr": "clsp.methods.simclr:SimCLR",
    "moco": "clsp.methods.moco:MoCo",
    "nnclr": "clsp.methods.nnclr:NNCLR",
    "all4one": "clsp.methods.all4one:All4One",
    "supcon": "clsp.methods.supcon:SupCon",
    "byol": "clsp.methods.byol:BYOL",
}


def method_class(name: str):
    """The LightningModule class of a method name (imported on demand: torch and Lightning are heavy)."""
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)
