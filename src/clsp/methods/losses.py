"""Contrastive losses as pure functions of tensors, each written as its equation.

Projections are L2-normalised inside every loss (normalising twice is harmless), so callers may pass
raw projector outputs. Across processes, `gather` concatenates a tensor from every rank with the
gradient flowing back to the rank that produced each part, so a loss over the gathered global batch
has the gradient of the single-process loss over that batch.
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from clsp.training import rank_and_world


def fp32(loss):
    """Compute a loss in float32 even inside a bf16 autocast region (logits / 0.2 need the precision)."""
    def as_float(x):
        if torch.is_tensor(x) and x.is_floating_point():
            return x.float()
        if isinstance(x, (list, tuple)):
            return type(x)(as_float(v) for v in x)
        return x

    @functools.wraps(loss)
    def wrapper(*args, **kwargs):
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return loss(*(as_float(a) for a in args), **{k: as_float(v) for k, v in kwargs.items()})
    return wrapper


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums each part's gradient over ranks and returns this rank's part
    (the GatherLayer of SimCLR's and solo-learn's code; works with gloo, which lacks reduce_scatter)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def gather(x: Tensor) -> Tensor:
    """x from every rank, concatenated in rank order (identity on one process)."""
    return _GatherWithGrad.apply(x) if rank_and_world()[1] > 1 else x


@fp32
def nt_xent(z: list[Tensor] | tuple[Tensor, ...] | Tensor, temperature: float = 0.2, gather_negatives: bool = True) -> Tensor:
    """NT-Xent (SimCLR) over V views of the same B images: for anchor z_i^v,

        l_i^v = -1/(V-1) sum_{u != v} log  exp(s(z_i^v, z_i^u)/t) / sum_{(j,w) != (i,v)} exp(s(z_i^v, z_j^w)/t)

    with s the cosine similarity, negatives all other views of all images of the global batch.
    `z` is a list of (B, d) views, or one (2B, d) tensor holding view 1 then view 2.
    """
    views = list(z) if isinstance(z, (list, tuple)) else list(z.chunk(2))
    n_views, b = len(views), views[0].shape[0]
    rank, size = rank_and_world() if gather_negatives else (0, 1)
    local = [F.normalize(v, dim=1) for v in views]
    columns = torch.cat([gather(v) if size > 1 else v for v in local])       # (V * size * B, d), view-major
    logits = torch.cat(local) @ columns.T / temperature                         # (V * B, V * size * B)

    row_view = torch.arange(n_views, device=logits.device).repeat_interleave(b)
    row_image = torch.arange(b, device=logits.device).repeat(n_views) + rank * b
    col_view = torch.arange(n_views, device=logits.device).repeat_interleave(size * b)
    col_image = torch.arange(size * b, device=logits.device).repeat(n_views)
    same_image = row_image[:, None] == col_image[None, :]
    itself = same_image & (row_view[:, None] == col_view[None, :])
    positives = same_image & ~itself

    log_prob = logits - torch.logsumexp(logits.masked_fill(itself, float("-inf")), dim=1, keepdim=True)
    return -(log_prob * positives).sum(1).div(n_views - 1).mean()


@fp32
def supcon(z: list[Tensor] | tuple[Tensor, ...], labels: Tensor, temperature: float = 0.2) -> Tensor:
    """Supervised contrast (Khosla et al. 2020, L^sup_out) over V views of B labelled images: for anchor z_i^v,

        l_i^v = -1/|P(i,v)| sum_{(j,u) in P(i,v)} log  exp(s(z_i^v, z_j^u)/t) / sum_{(k,w) != (i,v)} exp(s(z_i^v, z_k^w)/t)

    with P(i,v) every other view of the global batch whose image has label y_i (the anchor's other views
    among them, so an anchor is never without a positive), s the cosine similarity; the loss is the mean
    over anchors. With all labels distinct P(i,v) is the anchor's other views: NT-Xent.
    """
    views = list(z)
    n_views, b = len(views), views[0].shape[0]
    rank, size = rank_and_world()
    local = [F.normalize(v, dim=1) for v in views]
    columns = torch.cat([gather(v) if size > 1 else v for v in local])       # (V * size * B, d), view-major
    logits = torch.cat(local) @ columns.T / temperature                         # (V * B, V * size * B)
    column_labels = (gather(labels) if size > 1 else labels).repeat(n_views)

    row_index = torch.arange(n_views, device=logits.device).repeat_interleave(b) * size * b \
        + torch.arange(b, device=logits.device).repeat(n_views) + rank * b      # each anchor's own column
    itself = row_index[:, None] == torch.arange(logits.shape[1], device=logits.device)[None, :]
    positives = (labels.repeat(n_views)[:, None] == column_labels[None, :]) & ~itself

    log_prob = logits - torch.logsumexp(logits.masked_fill(itself, float("-inf")), dim=1, keepdim=True)
    return -((log_prob * positives).sum(1) / positives.sum(1)).mean()


@fp32
def infonce_queue(q: Tensor, k: Tensor, queue: Tensor, temperature: float = 0.2) -> Tensor:
    """MoCo's InfoNCE: the key k_i of the same image is the positive of query q_i, the queue of past
    keys the negatives:  -log exp(q.k/t) / (exp(q.k/t) + sum_n exp(q.n/t)).  k carries no gradient."""
    q, k = F.normalize(q, dim=1), F.normalize(k.detach(), dim=1)
    positive = (q * k).sum(1, keepdim=True)
    negatives = q @ queue.detach().T
    logits = torch.cat([positive, negatives], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


@fp32
def nearest_neighbours(z: Tensor, support: Tensor, k: int = 1) -> Tensor:
    """The k support-set entries most cosine-similar to each row of z: (B, k, d), nearest first."""
    similarity = F.normalize(z, dim=1) @ support.T
    return support[similarity.topk(k, dim=1).indices]


@fp32
def nnclr_loss(nn: Tensor, p: Tensor, temperature: float = 0.2) -> Tensor:
    """NNCLR: the neighbour NN(z_i) of one view is the positive of the prediction p_i of the other;
    the predictions of the other images of the global batch are the negatives:
        -log exp(NN(z_i).p_i/t) / sum_j exp(NN(z_i).p_j/t)."""
    nn, p = F.normalize(nn, dim=1), F.normalize(p, dim=1)
    rank, _ = rank_and_world()
    logits = nn @ gather(p).T / temperature
    labels = torch.arange(len(nn), device=nn.device) + rank * len(nn)
    return F.cross_entropy(logits, labels)


@fp32
def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's regression of the online prediction onto the target projection: mean_i (2 - 2 cos(p_i, sg(z_i)))."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


@fp32
def clsp_term(z1: Tensor, z3: Tensor | list[Tensor], weights: Tensor | None = None) -> Tensor:
    """CLSP's synthetic-positive term: mean_i (2 - 2 cos(z1_i, z3_i)) = mean_i |z1_i/|z1_i| - z3_i/|z3_i||^2.

    With P positives per image (z3 a list of P (B, d) projections) and per-pair weights q (P, B):
        mean_{p, i} q_pi (2 - 2 cos(z1_i, z3_pi)).
    """
    z3 = list(z3) if isinstance(z3, (list, tuple)) else [z3]
    if len(z3) == 1 and weights is None:                                       # the paper's term
        return (2 - 2 * F.cosine_similarity(z1, z3[0], dim=1)).mean()
    distance = 2 - 2 * F.cosine_similarity(z1[None], torch.stack(z3), dim=2)   # (P, B)
    return (distance if weights is None else weights * distance).mean()


@fp32
def clsp_contrast(z1: Tensor, z3: Tensor | list[Tensor], weights: Tensor | None = None,
                  temperature: float = 0.2) -> Tensor:
    """The CLSP term in contrastive form (`clsp.form=contrast`): each anchor's first view picks out its P synthetic
    positives among every synthetic positive of the global batch and the other images' first views, with
    StableRep's multi-positive target (uniform over the P positives, Tian et al. 2023):

        l_i = -1/P sum_p q_pi log  exp(s(z1_i, z3p_i)/t) / sum_{c in C_i} exp(s(z1_i, c)/t)

    C_i = {z3p_j : all p, j} + {z1_j : j != i}, s the cosine similarity, q the quality weights (1 when None);
    the loss is the mean over anchors. Unlike the cosine form, the positives are pulled towards their anchor only
    relative to the other images, so the term cannot be lowered by collapsing every projection onto one point
    (its value there is log(|C_i|), not 0).
    """
    z3 = list(z3) if isinstance(z3, (list, tuple)) else [z3]
    n_pos, b = len(z3), z1.shape[0]
    rank, size = rank_and_world()
    anchors = F.normalize(z1, dim=1)
    local = [anchors, *(F.normalize(z, dim=1) for z in z3)]
    columns = torch.cat([gather(v) if size > 1 else v for v in local])        # ((1 + P) * size * B, d), view-major
    logits = anchors @ columns.T / temperature                                   # (B, (1 + P) * size * B)
    own = torch.arange(b, device=logits.device) + rank * b                      # each anchor's image in the global batch
    itself = torch.zeros_like(logits, dtype=torch.bool)
    itself[torch.arange(b, device=logits.device), own] = True
    log_prob = logits - torch.logsumexp(logits.masked_fill(itself, float("-inf")), dim=1, keepdim=True)
    positive_columns = own[None, :] + size * b * torch.arange(1, n_pos + 1, device=logits.device)[:, None]   # (P, B)
    positive_log_prob = log_prob.gather(1, positive_columns.T).T                # (P, B)
    if weights is not None:
        positive_log_prob = weights * positive_log_prob
    return -positive_log_prob.mean()


def clsp_loss(z1: Tensor, z3: Tensor | list[Tensor], weights: Tensor | None = None, form: str = "cosine",
              temperature: float = 0.2) -> Tensor:
    """The CLSP term of `clsp.form`: `clsp_term` (cosine, the paper's) or `clsp_contrast` (contrast)."""
    if form == "contrast":
        return clsp_contrast(z1, z3, weights, temperature)
    return clsp_term(z1, z3, weights)


def quality_weights(scores: Tensor) -> Tensor:
    """Per-pair weights of the CLSP term from label-free scores in [-1, 1] (cosines of anchor and candidate):
        q = max(s, 0) / mean(max(s, 0)).
    A candidate pointing away from its anchor (s <= 0, likely another content) weighs nothing: a negative
    weight would push it away, which is the contrastive loss's job, not the positive term's. Dividing by
    the mean over the batch (and the P positives) keeps the mean weight at 1, so lambda keeps its meaning
    and only the split of the term between pairs changes. Scores carry no gradient."""
    kept = scores.detach().float().clamp_min(0)
    return kept / kept.mean().clamp_min(1e-6)


def _off_diagonal(c: Tensor) -> Tensor:
    n = c.shape[0]
    return c.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


@fp32
def feature_correlation_loss(m1: Tensor, m2: Tensor, z1: Tensor, z2: Tensor, scale: float = 10.0) -> Tensor:
    """All4One's redundancy-reduction feature term. Each feature column is normalised over the batch;
    C = m1^T z2 (and m2^T z1) correlates momentum and online features of opposite views. The diagonal
    is pulled to 1 (invariance), the off-diagonal to 0 (redundancy reduction), each as a root mean square:
        scale * (0.5 sqrt(mean (C_ii - 1)^2) + 0.5 sqrt(mean_{i != j} C_ij^2)), both averaged over the two C."""
    def corr(a: Tensor, b: Tensor) -> Tensor:
        return F.normalize(a, dim=0).T @ F.normalize(b, dim=0)

    c1, c2 = corr(m1, z2), corr(m2, z1)
    on = 0.5 * ((c1.diagonal() - 1).pow(2).mean() + (c2.diagonal() - 1).pow(2).mean())
    off = 0.5 * (_off_diagonal(c1).pow(2).mean() + _off_diagonal(c2).pow(2).mean())
    return scale * (0.5 * on.sqrt() + 0.5 * off.sqrt())
