"""Weighted kNN classification of frozen features (InstDisc, Wu et al. 2018; the solo-learn protocol).

For a test feature q and its k most cosine-similar training features f_i with labels y_i,
    score(c) = sum_i exp(cos(q, f_i) / T) * [y_i = c],   prediction = argmax_c score(c),
with T = 0.07. The release reports the best k over {5, 10, 20, 50, 100, 200} on the test set;
we report that and a fixed k (200) side by side.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from clsp.config import to_dict

KS = (5, 10, 20, 50, 100, 200)
FIXED_K = 200


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


def knn_table(results: dict) -> str:
    from clsp.eval.metrics import format_table

    rows = [[f"k={k}", acc] for k, acc in sorted((int(k), v) for k, v in results["accuracy"].items())]
    rows += [[f"best (k={results['best_k']})", results["best"]], [f"fixed (k={results['fixed_k']})", results["fixed"]]]
    return format_table(["kNN top-1 (%)", "acc"], rows)


def knn_eval(encoder_path, dataset_cfg, out_dir=None, ks: Sequence[int] = KS, temperature: float = 0.07,
             fixed_k: int = FIXED_K, batch_size: int = 512, device=None) -> dict:
    """Weighted kNN of the encoder's test features against its train features; writes metrics.json.

    Features are computed once (train, test), in batches, on the GPU when there is one.
    Results: accuracy for every k, the best k (the release's protocol) and the fixed k side by side.
    """
    from clsp.data.config import load_split
    from clsp.eval.metrics import dataset_record, open_encoder, require_labels, run_evaluation

    ks = sorted(set(int(k) for k in ks) | {int(fixed_k)})
    encoder, out = open_encoder(encoder_path, "knn", out_dir, device)
    data_cfg = encoder.dataset_config(dataset_cfg)
    train, test = load_split(data_cfg, data_cfg.train_split), load_split(data_cfg, data_cfg.test_split)
    require_labels(train, test)
    config = {"kind": "knn", "encoder": str(encoder.path), "dataset": to_dict(data_cfg), "ks": ks,
              "temperature": temperature, "fixed_k": fixed_k}
    inputs = {"encoder": encoder.record()["sha256"], "train": train.fingerprint, "test": test.fingerprint}

    def compute() -> dict:
        train_feats = encoder.features(train, batch_size=batch_size)
        test_feats = encoder.features(test, batch_size=batch_size)
        usable = sorted({min(k, len(train)) for k in ks})  # a k beyond the training set is the whole set: say so
        if usable != ks:
            print(f"kNN: the training split has {len(train)} images, fewer than k = "
                  f"{', '.join(str(k) for k in ks if k > len(train))}: those are k = {len(train)} (every training image)")
        acc = knn_accuracy(train_feats, train.labels, test_feats, test.labels, ks=usable, temperature=temperature,
                           num_classes=len(train.classes))
        k_best, best = best_k(acc)
        fixed = min(fixed_k, len(train))
        return {"accuracy": {str(k): v for k, v in acc.items()}, "best_k": k_best, "best": best,
                "fixed_k": fixed, "fixed": acc[fixed], "temperature": temperature,
                "n_train": len(train), "n_test": len(test)}

    return run_evaluation(out, "knn", config, inputs, compute, knn_table, encoder.record(), dataset_record(test),
                          train_dataset=dataset_record(train))
