"""Probe: agreement and pixel shares of interpolated candidates under sampler settings (200 anchors x K 2)."""
import sys, time, dataclasses, numpy as np, torch
from clsp.data.config import DatasetConfig, load_split
from clsp.diffusion.model import load_model
from clsp.diffusion.sampler import SamplerConfig, generate_positives
from clsp.eval.reference import reference_classifier
torch.set_num_threads(1)
ds = DatasetConfig(name="fashion-mnist", size=16)
train, test = load_split(ds, "train"), load_split(ds, "test")
ref = reference_classifier(train, test)
print("judge", ref.test_accuracy, flush=True)
rng = np.random.default_rng(0)
idx = np.sort(rng.permutation(len(train))[:int(sys.argv[1])])
real = train.images[idx]
print(f"real at0 {(real==0).mean()*100:.1f} le4 {(real<=4).mean()*100:.1f}", flush=True)
model = sys.argv[2]
unet, sched = load_model(model)
for spec in sys.argv[3:]:
    kw = {}
    for r in spec.split(","):
        k, v = r.split("=")
        kw[k] = v if k in ("sampler", "timestep_spacing") else (v == "1" if k in ("clip_x0", "share_anchor") else (int(v) if k in ("steps", "layers") else float(v)))
    cfg = SamplerConfig(**kw)
    t = time.time()
    c = generate_positives(unet, sched, torch.from_numpy(real), 2, cfg, seed=0).numpy()
    flat = c.reshape(-1, *c.shape[2:])
    pred, _ = ref.predict(flat)
    agr = (pred == np.repeat(train.labels[idx], 2)).mean() * 100
    print(f"{spec:55s} agree {agr:5.1f} at0 {(flat==0).mean()*100:5.1f} le4 {(flat<=4).mean()*100:5.1f} at255 {(flat==255).mean()*100:4.2f} {time.time()-t:5.1f}s", flush=True)
