"""The weighted kNN classifier of frozen features (InstDisc, Wu et al. 2018), used by `clsp eval knn` and
by pretraining's online monitor, so it sits below both `clsp.methods` and `clsp.eval`.

For a test feature q and its k most cosine-similar training features f_i with labels y_i,
    score(c) = sum_i exp(cos(q, f_i) / T) * [y_i = c],   prediction = argmax_c score(c).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

KS = (5, 10, 20, 50, 100, 200)


@torch.no_grad()
def knn_accuracy(train_feats: torch.Tensor, train_labels, test_feats: torch.Tensor, test_labels,
                 ks: Sequence[int] = KS, temperature: float = 0.07, num_classes: int | None = None,
                 batch_size: int = 1024) -> dict[int, float]:
    """Top-1 accuracy (percent) of weighted kNN for every k in `ks`, batched over test points.

    Runs on the device of `train_feats`; a k larger than the training set uses the whole set.
    """
    device = train_feats.device
    train = F.normalize(train_feats.float(), dim=1)
    test = F.normalize(test_feats.float().to(device), dim=1)
    train_y = torch.as_tensor(train_labels, device=device).long()
    test_y = torch.as_tensor(test_labels, device=device).long()
    classes = num_classes or int(torch.cat([train_y, test_y]).max()) + 1
    k_max = min(max(ks), len(train))
    correct = {k: torch.zeros((), dtype=torch.long, device=device) for k in ks}
    for start in range(0, len(test), batch_size):
        sim = test[start:start + batch_size] @ train.T                       # (b, N) cosine similarities
        top_sim, top_idx = sim.topk(k_max, dim=1)                             # sorted, most similar first
        weights = (top_sim / temperature).exp()
        neighbour_y = train_y[top_idx]
        truth = test_y[start:start + batch_size]
        for k in ks:
            k_used = min(k, k_max)
            scores = torch.zeros(len(sim), classes, device=device)
            scores.scatter_add_(1, neighbour_y[:, :k_used], weights[:, :k_used])
            correct[k] += (scores.argmax(1) == truth).sum()
    n = len(test)
    return {k: 100.0 * int(correct[k]) / n for k in ks}


def best_k(accuracies: dict[int, float]) -> tuple[int, float]:
    """The k with the highest accuracy (the smallest such k on ties) and that accuracy."""
    k = max(sorted(accuracies), key=lambda k: accuracies[k])
    return k, accuracies[k]
