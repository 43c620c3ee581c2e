"""clsp: Contrastive Learning with Synthetic Positives (Zeng et al., ECCV 2024).

An unconditional diffusion model trained on the user's images makes hard positives by interpolating
each image's bottleneck features during sampling; a contrastive learner trains with them as an extra
positive, and the encoder is evaluated by linear probe, kNN and transfer.

The library, for anyone's training loop (no CLI needed):

- `generate_positives(model, images, k, w, ...)` -> candidates (N, K, C, H, W), in the images' dtype and range
  (uint8, or float in [0, 1]), from any diffusers UNet2DModel, a model directory or "clsp:fashion-mnist-16";
- `PositivesStore.save(path, candidates, images)` writes them; `PositivesStore.open(path, dataset)` is a
  map-style dataset of (dataset[i], positives of image i) over any dataset in the store's order (checked);
- `CLSPTerm(weight, ramp_steps)`: the nn.Module lambda(step) * mean_i (2 - 2 cos(z1_i, z3_i)) on projections;
- `load_encoder(path)` -> (backbone nn.Module in eval mode, giving (B, feat_dim) features; its meta dict:
  arch, stem, feat_dim, image_size, mean, std, dataset, method, clsp_lambda) from a `clsp pretrain` encoder;
- `load_dataset(name, split)` -> an ImageSet (uint8 `images` (N, H, W, C), `labels`, `classes`,
  `fingerprint`, `mean`, `std`), or a StreamingImageSet for sets too large for memory.

The names load on first use, so `import clsp` (and `clsp --help`) imports no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {                                   # name -> the module that defines it
    "generate_positives": "clsp.positives.generate",
    "PositivesStore": "clsp.positives.store",
    "CLSPTerm": "clsp.methods.clsp_term",
    "load_encoder": "clsp.models.encoder",
    "load_dataset": "clsp.data.catalogue",
    "UserError": "clsp.errors",
}

__all__ = ["CLSPTerm", "PositivesStore", "UserError", "__version__", "generate_positives", "load_dataset", "load_encoder"]

if TYPE_CHECKING:
    from clsp.data.catalogue import load_dataset
    from clsp.errors import UserError
    from clsp.methods.clsp_term import CLSPTerm
    from clsp.models.encoder import load_encoder
    from clsp.positives.generate import generate_positives
    from clsp.positives.store import PositivesStore


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'clsp' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value                   # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
