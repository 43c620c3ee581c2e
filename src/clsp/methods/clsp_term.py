"""The CLSP term as a module, for anyone's training loop: the synthetic positive z3 of each image pulled
towards its anchor's view z1 (PAPER.md, stage 3),

    L_clsp = lambda(step) * mean_i (2 - 2 cos(z1_i, z3_i)),

lambda(step) rising linearly from 0 to `weight` over `ramp_steps` steps (constant when 0). It is the term
`clsp pretrain` adds to every method (clsp.methods.base): the same equation (`losses.clsp_term`), the same
ramp (`clsp_weight_at`; `clsp.ramp_epochs` E with S steps an epoch is `ramp_steps = round(E * S)`) and the
same label-free quality weights (`clsp.quality=online`: `losses.quality_weights`). Torch only: no Lightning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clsp.methods.losses import clsp_term, quality_weights


def clsp_weight_at(step: int, weight: float, ramp_steps: int) -> float:
    """lambda at a step: linear from 0 (step 0) to `weight` (step ramp_steps and after); `weight` when ramp_steps = 0."""
    return weight if step >= ramp_steps else weight * step / ramp_steps


class CLSPTerm(nn.Module):
    """lambda(step) * mean_i (2 - 2 cos(z1_i, z3_i)) on projections: add it to a contrastive loss.

    Args:
        weight: lambda once the ramp is over (the paper's CIFAR-10 setting is 1.0; `clsp.weight` in pretraining).
        ramp_steps: steps over which lambda rises linearly from 0 to `weight`; 0 = `weight` from the first step.
        quality: weight each pair by its label-free score max(cos(z1_i, z3_i), 0), normalised to mean 1 over the
            batch (pretraining's `clsp.quality=online`): a candidate pointing away from its anchor weighs nothing.

    Call it as `term(z1, z3, step)`: z1 the projections (B, d) of the anchors' first view, z3 those of their
    synthetic positives (B, d), or a list of P such tensors (P positives per image: the term averages over them),
    through the same projector as z1. Projections are L2-normalised inside, so raw projector outputs do.
    `step` (the optimiser step, from 0) is needed only while ramping.
    """

    def __init__(self, weight: float = 1.0, ramp_steps: int = 0, quality: bool = False) -> None:
        super().__init__()
        if weight < 0 or ramp_steps < 0:
            raise ValueError(f"CLSPTerm needs weight >= 0 and ramp_steps >= 0, got weight={weight}, ramp_steps={ramp_steps}")
        self.weight, self.ramp_steps, self.quality = float(weight), int(ramp_steps), bool(quality)

    def weight_at(self, step: int | None) -> float:
        """lambda at `step`."""
        if step is None:
            if self.ramp_steps:
                raise ValueError(f"CLSPTerm ramps lambda over {self.ramp_steps} steps: pass the step, term(z1, z3, step)")
            return self.weight
        return clsp_weight_at(int(step), self.weight, self.ramp_steps)

    def forward(self, z1: Tensor, z3: Tensor | list[Tensor], step: int | None = None) -> Tensor:
        positives = list(z3) if isinstance(z3, (list, tuple)) else [z3]
        q = None
        if self.quality:
            with torch.no_grad():
                scores = torch.stack([F.cosine_similarity(z1.float(), z.float(), dim=1) for z in positives])
            q = quality_weights(scores)
        return self.weight_at(step) * clsp_term(z1, positives, q)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, ramp_steps={self.ramp_steps}, quality={self.quality}"
