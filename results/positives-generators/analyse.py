"""Which label-free space tells a candidate that keeps its class? AUC of each space's cosine for the judge's verdict.

python analyse.py N PROBE.npz [PROBE.npz ...]   (N: the anchors of the probes). Also prints the reference marks (two augmentations,
nearest real image) in the judge's space for the same anchors.
"""
import sys, numpy as np
from sklearn.metrics import roc_auc_score
from clsp.data.config import DatasetConfig, load_split
from clsp.eval.positives import PositivesEvalConfig, _Judge
from clsp.eval.reference import reference_classifier

data = {}
for path in sys.argv[2:]:
    data.update(dict(np.load(path)))
specs = sorted({k.split("|")[0] for k in data})
spaces = ("unet", "resnet", "pixels", "judge_cos")
pooled = {s: [] for s in spaces}
kept = []
print(f"{'setting':24s} {'agree':>6s} " + " ".join(f"{s:>9s}" for s in spaces) + "   (AUC of the cosine for 'class kept')")
for spec in specs:
    k = data[f"{spec}|kept"].ravel()
    kept.append(k)
    aucs = []
    for s in spaces:
        v = data[f"{spec}|{s}"].ravel()
        pooled[s].append(v)
        aucs.append(roc_auc_score(k, v) if 0 < k.mean() < 1 else float("nan"))
    print(f"{spec:24s} {100 * k.mean():6.1f} " + " ".join(f"{a:9.3f}" for a in aucs))
kept = np.concatenate(kept)
print(f"{'all settings pooled':24s} {100 * kept.mean():6.1f} " +
      " ".join(f"{roc_auc_score(kept, np.concatenate(pooled[s])):9.3f}" for s in spaces))

n = int(sys.argv[1])
ds = DatasetConfig(name="fashion-mnist", size=16)
train, test = load_split(ds, "train"), load_split(ds, "test")
judge = _Judge(reference_classifier(train, test), train, test, PositivesEvalConfig(real_n=5000))
idx = np.sort(np.random.default_rng(0).permutation(len(train))[:n])
anchors = train.images_at(idx)
marks = judge.judge(idx, anchors[:, None], 0)["marks"]
print("marks (judge space):", {k: {m: round(v, 3) for m, v in d.items()} for k, d in marks.items()})
