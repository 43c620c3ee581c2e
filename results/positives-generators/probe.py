"""Probe: per-candidate judge verdicts and label-free similarities of fixed-start generators.

python probe.py N OUT.npz SPEC...   SPEC = name:w:layers:start (DDIM 10 steps, eta 0.1, trailing, K = 2)
Saves, per setting, the judge's verdict (class kept), the judge-space cosine to the anchor, and the cosine to the
anchor in each label-free space (unet, resnet, pixels), so the rule's space can be chosen by measurement.
"""
import sys, time, numpy as np, torch
from clsp.data.config import DatasetConfig, load_split
from clsp.diffusion.model import load_model
from clsp.diffusion.sampler import SamplerConfig, generate_positives
from clsp.eval.reference import reference_classifier
from clsp.positives.strength import Features, cosine_to_anchor, SPACES

torch.set_num_threads(1)
ds = DatasetConfig(name="fashion-mnist", size=16)
train, test = load_split(ds, "train"), load_split(ds, "test")
ref = reference_classifier(train, test)
n, out = int(sys.argv[1]), sys.argv[2]
idx = np.sort(np.random.default_rng(0).permutation(len(train))[:n])
anchors = torch.from_numpy(train.images_at(idx))
labels = train.labels[idx]
unet, sched = load_model("clsp:fashion-mnist-16")
spaces = {s: Features(s, unet) for s in SPACES}
_, anchor_feats = ref.predict(anchors.numpy())
results = {}
for spec in sys.argv[3:]:
    name, w, layers, start = spec.split(":")
    cfg = SamplerConfig(sampler="ddim", steps=10, eta=0.1, w=float(w), layers=int(layers), start=float(start), batch_size=500)
    t = time.time()
    c = generate_positives(unet, sched, anchors, 2, cfg, seed=0)
    seconds = time.time() - t
    flat = c.reshape(-1, *c.shape[2:]).numpy()
    pred, feats = ref.predict(flat)
    kept = (pred == np.repeat(labels, 2)).reshape(n, 2)
    cos = np.einsum("nkd,nd->nk", feats.reshape(n, 2, -1), anchor_feats)
    row = {"kept": kept, "judge_cos": cos, "seconds": seconds}
    for s, f in spaces.items():
        row[s] = cosine_to_anchor(f, anchors, c).numpy()
    results[spec] = row
    print(f"{spec:24s} agree {kept.mean()*100:5.1f} judge-cos {cos.mean():.3f} " +
          " ".join(f"{s} {row[s].mean():.3f}" for s in SPACES) + f" {seconds:5.1f}s", flush=True)
    np.savez(out, **{f"{k}|{m}": v for k, r in results.items() for m, v in r.items()})   # after every setting
