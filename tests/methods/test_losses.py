"""Losses against hand-computed values on tiny inputs, and against lightly where lightly has the same loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clsp.methods.losses import (clsp_contrast, clsp_term, feature_correlation_loss, infonce_queue, nearest_neighbours,
                                 nnclr_loss, nt_xent, supcon)


def unit(*v):
    t = torch.tensor(v, dtype=torch.float64)
    return t / t.norm()


def by_hand_nt_xent(views: list[torch.Tensor], t: float) -> float:
    """The SimCLR loss with explicit loops: every (image, view) anchor, its other views positives."""
    vs = [F.normalize(v.double(), dim=1) for v in views]
    n_views, b = len(vs), len(vs[0])
    total = 0.0
    for v in range(n_views):
        for i in range(b):
            denominator = sum(math.exp(float(vs[v][i] @ vs[w][j]) / t)
                              for w in range(n_views) for j in range(b) if (w, j) != (v, i))
            for u in range(n_views):
                if u != v:
                    total -= math.log(math.exp(float(vs[v][i] @ vs[u][i]) / t) / denominator) / (n_views - 1)
    return total / (n_views * b)


def test_nt_xent_two_images_by_hand():
    # z1 = (e1, e2), z2 = (e1, e1 rotated 90 deg = e2): each anchor's positive is exact, negatives known.
    z1 = torch.stack([unit(1, 0), unit(0, 1)])
    z2 = torch.stack([unit(1, 0), unit(0, 1)])
    t = 0.5
    # anchor (view 1, image 0): similarities to the others: own positive 1, image 1 in both views 0.
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * math.exp(0)))
    assert nt_xent([z1, z2], t).item() == pytest.approx(expected, rel=1e-6)
    assert nt_xent(torch.cat([z1, z2]), t).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("n_views", [2, 3])
def test_nt_xent_matches_loops(n_views):
    g = torch.Generator().manual_seed(n_views)
    views = [torch.randn(5, 7, generator=g) for _ in range(n_views)]
    assert nt_xent(views, 0.2).item() == pytest.approx(by_hand_nt_xent(views, 0.2), rel=1e-5)


@pytest.mark.parametrize("t", [0.1, 0.2, 0.5])
def test_nt_xent_matches_lightly(t):
    from lightly.loss import NTXentLoss

    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g)
    assert nt_xent([z1, z2], t).item() == pytest.approx(NTXentLoss(temperature=t)(z1, z2).item(), rel=1e-5)


def by_hand_supcon(views: list[torch.Tensor], labels: list[int], t: float) -> float:
    """SupCon with explicit loops: every (image, view) anchor; its positives every other (image, view) of its label."""
    vs = [F.normalize(v.double(), dim=1) for v in views]
    n_views, b = len(vs), len(vs[0])
    total = 0.0
    for v in range(n_views):
        for i in range(b):
            others = [(w, j) for w in range(n_views) for j in range(b) if (w, j) != (v, i)]
            denominator = sum(math.exp(float(vs[v][i] @ vs[w][j]) / t) for w, j in others)
            positives = [(w, j) for w, j in others if labels[j] == labels[i]]
            total -= sum(math.log(math.exp(float(vs[v][i] @ vs[w][j]) / t) / denominator)
                         for w, j in positives) / len(positives)
    return total / (n_views * b)


@pytest.mark.parametrize("n_views", [2, 3])
def test_supcon_matches_loops(n_views):
    g = torch.Generator().manual_seed(10 + n_views)
    views = [torch.randn(6, 5, generator=g) for _ in range(n_views)]
    labels = [0, 1, 0, 2, 1, 0]               # a class of three, one of two, one alone
    got = supcon(views, torch.tensor(labels), 0.1).item()
    assert got == pytest.approx(by_hand_supcon(views, labels, 0.1), rel=1e-5)
    assert got != pytest.approx(nt_xent(views, 0.1).item(), rel=1e-3)   # the shared labels change it


def test_supcon_two_images_of_one_class_by_hand():
    # z1 = z2 = (e1, e2), both images of one class: each anchor's 3 others are all positives, so every
    # log-probability is against the same denominator e^{1/t} + 2 e^0.
    z = torch.stack([unit(1, 0), unit(0, 1)])
    t = 0.5
    denominator = math.exp(1 / t) + 2
    expected = -(math.log(math.exp(1 / t) / denominator) + 2 * math.log(1 / denominator)) / 3
    assert supcon([z, z], torch.tensor([4, 4]), t).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("t", [0.1, 0.2])
def test_supcon_is_nt_xent_when_every_label_is_distinct(t):
    g = torch.Generator().manual_seed(3)
    views = [torch.randn(16, 8, generator=g) for _ in range(2)]
    labels = torch.randperm(16, generator=g) + 5
    assert supcon(views, labels, t).item() == pytest.approx(nt_xent(views, t).item(), rel=1e-6)


def test_infonce_queue_by_hand_and_matches_lightly_memory_bank():
    from lightly.loss import NTXentLoss

    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    queue = F.normalize(torch.randn(64, 16, generator=g), dim=1)
    t = 0.2
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    by_hand = sum(-math.log(math.exp(float(qn[i] @ kn[i]) / t) /
                            (math.exp(float(qn[i] @ kn[i]) / t) + sum(math.exp(float(qn[i] @ n) / t) for n in queue)))
                  for i in range(8)) / 8
    ours = infonce_queue(q, k, queue, t).item()
    assert ours == pytest.approx(by_hand, rel=1e-5)
    lightly_loss = NTXentLoss(temperature=t, memory_bank_size=(64, 16))
    lightly_loss.memory_bank.bank = queue.clone()
    assert ours == pytest.approx(lightly_loss(q, k).item(), rel=1e-5)


def test_infonce_queue_gradient_reaches_queries_only():
    q = torch.randn(4, 8, requires_grad=True)
    k = torch.randn(4, 8, requires_grad=True)
    infonce_queue(q, k, F.normalize(torch.randn(16, 8), dim=1)).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None


def test_nearest_neighbours_matches_brute_force_and_lightly():
    from lightly.models.modules import NNMemoryBankModule

    g = torch.Generator().manual_seed(3)
    support = F.normalize(torch.randn(50, 8, generator=g), dim=1)
    z = torch.randn(6, 8, generator=g)
    top3 = nearest_neighbours(z, support, k=3)
    for i in range(6):
        order = sorted(range(50), key=lambda j: -float(F.normalize(z[i], dim=0) @ support[j]))
        assert torch.equal(top3[i], support[order[:3]])
    bank = NNMemoryBankModule(size=(50, 8))
    bank.bank = support.clone()
    assert torch.allclose(nearest_neighbours(z, support)[:, 0], bank(z, update=False))


def test_nnclr_loss_by_hand():
    g = torch.Generator().manual_seed(4)
    nn, p = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    t = 0.2
    nnn, pn = F.normalize(nn, dim=1), F.normalize(p, dim=1)
    by_hand = sum(-math.log(math.exp(float(nnn[i] @ pn[i]) / t) / sum(math.exp(float(nnn[i] @ pn[j]) / t)
                                                                       for j in range(5))) for i in range(5)) / 5
    assert nnclr_loss(nn, p, t).item() == pytest.approx(by_hand, rel=1e-5)


def test_clsp_term_is_squared_distance_of_normalised_projections():
    g = torch.Generator().manual_seed(5)
    z1, z3 = torch.randn(10, 16, generator=g), torch.randn(10, 16, generator=g) * 3
    squared = (F.normalize(z1, dim=1) - F.normalize(z3, dim=1)).pow(2).sum(1).mean()
    assert clsp_term(z1, z3).item() == pytest.approx(squared.item(), rel=1e-5)
    assert clsp_term(z1, 2 * z1).item() == pytest.approx(0.0, abs=1e-6)     # same direction
    assert clsp_term(z1, -z1).item() == pytest.approx(4.0, rel=1e-6)        # opposite


def by_hand_clsp_contrast(z1: torch.Tensor, z3: list[torch.Tensor], q: torch.Tensor | None, t: float) -> float:
    """Each anchor's first view against every positive of the batch and the other images' first views."""
    a, positives = F.normalize(z1.double(), dim=1), [F.normalize(z.double(), dim=1) for z in z3]
    b, total = len(a), 0.0
    for i in range(b):
        candidates = [a[j] for j in range(b) if j != i] + [c[j] for c in positives for j in range(b)]
        denominator = sum(math.exp(float(a[i] @ c) / t) for c in candidates)
        for p, c in enumerate(positives):
            weight = 1.0 if q is None else float(q[p, i])
            total -= weight * math.log(math.exp(float(a[i] @ c[i]) / t) / denominator)
    return total / (b * len(positives))


@pytest.mark.parametrize("n_positives", [1, 3])
def test_clsp_contrast_matches_loops(n_positives):
    g = torch.Generator().manual_seed(n_positives)
    z1 = torch.randn(5, 7, generator=g)
    z3 = [torch.randn(5, 7, generator=g) * 2 for _ in range(n_positives)]
    q = torch.rand(n_positives, 5, generator=g)
    assert clsp_contrast(z1, z3, None, 0.3).item() == pytest.approx(by_hand_clsp_contrast(z1, z3, None, 0.3), rel=1e-5)
    assert clsp_contrast(z1, z3, q, 0.3).item() == pytest.approx(by_hand_clsp_contrast(z1, z3, q, 0.3), rel=1e-5)
    if n_positives == 1:
        assert clsp_contrast(z1, z3[0]).item() == clsp_contrast(z1, z3).item()


def test_clsp_contrast_is_not_lowered_by_collapse():
    """Unlike the cosine form, whose value at collapse is 0 (its minimum), the contrastive form at collapse is
    the log of its candidates' count, and a positive nearer its anchor than the others lowers it below that."""
    same = torch.ones(4, 6)
    assert clsp_term(same, same).item() == pytest.approx(0.0, abs=1e-6)
    assert clsp_contrast(same, [same, same]).item() == pytest.approx(math.log(3 * 4 - 1), rel=1e-6)
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(4, 6, generator=g)
    assert clsp_contrast(z1, z1 + 0.01 * torch.randn(4, 6, generator=g)).item() < math.log(2 * 4 - 1)


def test_feature_correlation_loss_by_hand():
    g = torch.Generator().manual_seed(6)
    m1, m2, z1, z2 = (torch.randn(12, 4, generator=g, dtype=torch.float64) for _ in range(4))

    def parts(a, b):
        a, b = a / a.norm(dim=0), b / b.norm(dim=0)
        c = [[float(a[:, i] @ b[:, j]) for j in range(4)] for i in range(4)]
        on = sum((c[i][i] - 1) ** 2 for i in range(4)) / 4
        off = sum(c[i][j] ** 2 for i in range(4) for j in range(4) if i != j) / 12
        return on, off

    (on1, off1), (on2, off2) = parts(m1, z2), parts(m2, z1)
    by_hand = 10 * (0.5 * math.sqrt((on1 + on2) / 2) + 0.5 * math.sqrt((off1 + off2) / 2))
    assert feature_correlation_loss(m1, m2, z1, z2, 10.0).item() == pytest.approx(by_hand, rel=1e-5)
    # identical, decorrelated features (orthogonal columns): no invariance or redundancy left
    eye = torch.eye(4).repeat(3, 1)
    assert feature_correlation_loss(eye, eye, eye, eye).item() == pytest.approx(0.0, abs=1e-5)


def test_losses_run_in_float32_under_bf16_autocast():
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    expected = nt_xent([z1, z2], 0.2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = nt_xent([z1.bfloat16(), z2.bfloat16()], 0.2)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(nt_xent([z1.bfloat16().float(), z2.bfloat16().float()], 0.2).item(), rel=1e-6)
    assert got.item() == pytest.approx(expected.item(), rel=2e-2)
