"""`clsp eval knn`: the weighted kNN classifier (clsp.knn) of an encoder's test features against its train
features, the solo-learn protocol: T = 0.07, and the release's best k over {5, 10, 20, 50, 100, 200} on the
test set reported beside a fixed k (200).
"""

from __future__ import annotations

from typing import Sequence

from clsp.config import to_dict
from clsp.knn import KS, best_k, knn_accuracy

FIXED_K = 200


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
    from clsp.eval.features import open_encoder
    from clsp.eval.metrics import dataset_record, require_labels, run_evaluation

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
