"""The CLSP term as a module, for anyone's training loop: the synthetic positive z3 of each image pulled
towards its anchor's view z1 (PAPER.md, stage 3),

    L_clsp = lambda(step) * mean_i (2 - 2 cos(z1_i, z3_i)),

or, in contrastive form (`form="contrast"`, StableRep's multi-positive loss: `losses.clsp_contrast`), each z1_i
picking out its positives among the batch's other positives and first views; lambda(step) rising linearly
from 0 to `weight` over `ramp_steps` steps (constant when 0). It is the term
`clsp pretrain` adds to every method (clsp.methods.base): the same equation (`losses.clsp_term`), the same
ramp (`clsp_weight_at`; `clsp.ramp_epochs` E with S steps an epoch is `ramp_steps = round(E * S)`) and the
same label-free quality weights (`clsp.quality=online`: `losses.quality_weights`) and the same forms
(`clsp.form`). Torch only: no Lightning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clsp.methods.losses import clsp_loss, quality_weights


def clsp_weight_at(step: int, weight: float, ramp_steps: int) -> float:
    """lambda at a step: linear from 0 (step 0) to `weight` (step ramp_steps and after); `weight` when ramp_steps = 0."""
    return weight if step >= ramp_steps else weight * step / ramp_steps


class CLSPTerm(nn.Module):
    """lambda(step) * mean_i (2 - 2 cos(z1_i, z3_i)) on projections, or its contrastive form: add it to a
    contrastive loss.

    Args:
        weight: lambda once the ramp is over (the paper's CIFAR-10 setting is 1.0; `clsp.weight` in pretraining).
        ramp_steps: steps over which lambda rises linearly from 0 to `weight`; 0 = `weight` from the first step.
        quality: weight each pair by its label-free score max(cos(z1_i, z3_i), 0), normalised to mean 1 over the
            batch (pretraining's `clsp.quality=online`): a candidate pointing away from its anchor weighs nothing.
        form: "cosine" (the paper's pull, above) or "contrast" (`clsp.form=contrast`: -log of each positive's share
            of a softmax over the batch's positives and other first views, at `temperature`; collapsing every
            projection onto one point does not lower it).
        temperature: the contrastive form's softmax temperature (pretraining uses the method's `temperature`).

    Call it as `term(z1, z3, step)`: z1 the projections (B, d) of the anchors' first view, z3 those of their
    synthetic positives (B, d), or a list of P such tensors (P positives per image: the term averages over them),
    through the same projector as z1. Projections are L2-normalised inside, so raw projector outputs do.
    `step` (the optimiser step, from 0) is needed only while ramping.
    """

    def __init__(self, weight: float = 1.0, ramp_steps: int = 0, quality: bool = False, form: str = "cosine",
                 temperature: float = 0.2) -> None:
        super().__init__()
        if weight < 0 or ramp_steps < 0 or temperature <= 0:
            raise ValueError(f"CLSPTerm needs weight >= 0, ramp_steps >= 0 and temperature > 0, got weight={weight}, "
                             f"ramp_steps={ramp_steps}, temperature={temperature}")
        if form not in ("cosine", "contrast"):
            raise ValueError(f"CLSPTerm's form is 'cosine' or 'contrast', got {form!r}")
        self.weight, self.ramp_steps, self.quality = float(weight), int(ramp_steps), bool(quality)
        self.form, self.temperature = form, float(temperature)

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
        return self.weight_at(step) * clsp_loss(z1, positives, q, self.form, self.temperature)

    def extra_repr(self) -> str:
        return (f"weight={self.weight}, ramp_steps={self.ramp_steps}, quality={self.quality}, form={self.form!r}"
                + (f", temperature={self.temperature}" if self.form == "contrast" else ""))
