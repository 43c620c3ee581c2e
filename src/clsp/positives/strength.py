"""How far from its anchor may a candidate go? A label-free, per-image choice of the partial-noise start s.

`sampler.start` = s starts each trajectory at its anchor noised to step ~s*T (GenView, SDEdit): small s keeps
the anchor's content and changes little, s = 1 is the paper's start from pure noise. One s does not suit every
image: a plain shirt survives s = 0.8 where a patterned bag does not. GenView picks the level per image; here,
with no labels:

    for s in grid, largest first:             candidates of the trajectories still undecided, started at s
        sim = cos(f(candidate), f(anchor))     in a label-free feature space f
        keep the candidates with sim >= floor  the hardest start whose candidate still resembles its anchor
    the rest keep the smallest s of the grid (their sim is recorded as it is, below the floor)

So each candidate gets the largest grid value whose candidate stays inside the band [floor, 1] of similarity to
its anchor. The chosen s and the similarity are returned per candidate; `clsp synthesize` stores them beside the
candidates (`PositivesStore.strength`), where training can read the similarity as a quality weight.

The feature spaces f (`SPACES`), none of which has seen a label:
  unet     the diffusion model's own encoder: the mid block and the deepest skip connections of its down path on the
           clean image (t = 0), each map L2-normalised, then concatenated. The maps the interpolation mixes.
  resnet   an untrained ResNet-18 (width 32, seed 0) with the encoders' stem, average-pooled: a random network's
           features already separate Fashion-MNIST's classes (the demo's untrained floor: kNN 69%).
  pixels   the centred pixel vector (cosine = Pearson correlation of the two images).
Which tracks "keeps the class" best was measured (results/positives-generators/): `unet` is the default.

Cost: each grid value reruns only the undecided trajectories, for floor(s * steps) steps each, plus one feature
pass per candidate and anchor.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from clsp.config import check_choice
from clsp.positives.config import SPACES, StrengthConfig  # noqa: F401  (re-exported: callers import them from here)

UNET_LEVELS = 4                   # mid block + the 3 deepest skips: what `layers: 4` interpolates


# -- label-free feature spaces -----------------------------------------------------------------------

class Features:
    """f(.) of one space: uint8 images (N, H, W, C) -> L2-normalised features (N, d) on the CPU."""

    def __init__(self, space: str, unet=None, batch_size: int = 512) -> None:
        check_choice(space, "strength.space", SPACES)
        self.space, self.unet, self.batch_size = space, unet, batch_size
        if space == "unet" and unet is None:
            raise ValueError("the unet space needs the diffusion model")
        self.net = _random_resnet() if space == "resnet" else None

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = torch.as_tensor(images)
        out = [self._batch(images[i:i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return F.normalize(torch.cat(out).float(), dim=1).cpu()

    def _batch(self, images: torch.Tensor) -> torch.Tensor:
        from clsp.diffusion.sampler import anchor_path, null_class, to_unit_range

        x = to_unit_range(images)
        if self.space == "pixels":
            flat = x.flatten(1)
            return flat - flat.mean(1, keepdim=True)
        if self.space == "resnet":
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            return self.net(x)
        device = next(self.unet.parameters()).device
        was_training = self.unet.training
        self.unet.eval()
        # A class-conditional UNet is read through its null class (its unconditional branch): the score stays label-free.
        labels = (torch.full((len(x),), null_class(self.unet), dtype=torch.long, device=device)
                  if self.unet.class_embedding is not None else None)
        try:
            mid, skips = anchor_path(self.unet, x.to(device), torch.tensor(0, device=device), UNET_LEVELS - 1, labels)
        finally:
            self.unet.train(was_training)
        return torch.cat([F.normalize(m.float().flatten(1), dim=1) for m in (mid, *skips)], dim=1)


def _random_resnet():
    from clsp.models.backbones import make_backbone

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net, _ = make_backbone("resnet18", "stl", 32)
    return net.eval()


def cosine_to_anchor(features: Features, anchors: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """cos(f(candidate), f(anchor)) for uint8 anchors (B, H, W, C) and candidates (B, K, H, W, C): (B, K)."""
    b, k = candidates.shape[:2]
    own = features(anchors)
    theirs = features(candidates.reshape(b * k, *candidates.shape[2:])).view(b, k, -1)
    return (theirs * own[:, None]).sum(-1)


# -- the rule ----------------------------------------------------------------------------------------

def generate_with_strength(unet, scheduler_config: dict, anchors: torch.Tensor, k: int, sampler, strength: StrengthConfig,
                           seed: int, device="cpu", anchor_labels=None, features: Features | None = None):
    """K candidates per anchor, each started at the largest s of `strength.grid` whose candidate keeps a label-free
    cosine >= `strength.floor` to its anchor. Returns uint8 candidates (B, K, H, W, C), the chosen s (B, K) and the
    similarity (B, K) (float32), all on the CPU. Grid value j draws its noise from seed hash(seed, j), and its
    trajectories are the undecided ones in order, so the result depends on the settings and the seed only."""
    from clsp.diffusion.sampler import generate_positives
    from clsp.training import step_seed

    features = features or Features(strength.space, unet)
    b = anchors.shape[0]
    per_candidate = anchors.repeat_interleave(k, dim=0)                 # trajectory j = anchor j // K, slot j % K
    labels = None if anchor_labels is None else torch.as_tensor(anchor_labels).repeat_interleave(k)
    out = torch.empty((b * k, *anchors.shape[1:]), dtype=torch.uint8)
    chosen = torch.zeros(b * k, dtype=torch.float32)
    similarity = torch.zeros(b * k, dtype=torch.float32)
    todo = torch.arange(b * k)
    grid = sorted(strength.grid, reverse=True)
    for j, s in enumerate(grid):
        made = generate_positives(unet, scheduler_config, per_candidate[todo], 1, dataclasses.replace(sampler, start=s),
                                  seed=step_seed(seed, j, stream="clsp-strength"), device=device,
                                  anchor_labels=None if labels is None else labels[todo])[:, 0]
        sim = cosine_to_anchor(features, per_candidate[todo], made[:, None])[:, 0]
        keep = sim >= strength.floor if j < len(grid) - 1 else torch.ones_like(sim, dtype=torch.bool)
        done = todo[keep]
        out[done], chosen[done], similarity[done] = made[keep], s, sim[keep]
        todo = todo[~keep]
        if not len(todo):
            break
    return out.view(b, k, *anchors.shape[1:]), chosen.view(b, k), similarity.view(b, k)


def summarise(start: np.ndarray, similarity: np.ndarray) -> dict:
    """What the store's stats show: how often each s was chosen, and the similarities' spread."""
    start, similarity = np.asarray(start).ravel(), np.asarray(similarity).ravel()
    values, counts = np.unique(start, return_counts=True)
    q = np.percentile(similarity, [5, 25, 50, 75, 95]) if similarity.size else [float("nan")] * 5
    return {"start_share": {f"{v:g}": float(c) / max(start.size, 1) for v, c in zip(values, counts)},
            "start_mean": float(start.mean()) if start.size else float("nan"),
            "similarity": {"mean": float(similarity.mean()) if similarity.size else float("nan"),
                           **{f"q{p}": float(v) for p, v in zip((5, 25, 50, 75, 95), q)}},
            "n": int(start.size)}
