"""Probe (patches the sampler's private anchor-noise step; not a clsp option): which noise the anchor's forward diffusion uses (fresh per step = the release; fixed; the sample's own x_T)."""
import sys, time, numpy as np, torch
import clsp.diffusion.sampler as S
from clsp.data.config import DatasetConfig, load_split
from clsp.diffusion.model import load_model
from clsp.eval.reference import reference_classifier
torch.set_num_threads(1)
ds = DatasetConfig(name="fashion-mnist", size=16)
train, test = load_split(ds, "train"), load_split(ds, "test")
ref = reference_classifier(train, test)
idx = np.sort(np.random.default_rng(0).permutation(len(train))[:int(sys.argv[1])])
real = torch.from_numpy(train.images[idx])
unet, sched = load_model("clsp:fashion-mnist-16")
orig = S._AnchorSide.noise_to_step
MODE = {"m": "fresh"}
def patched(self, i):
    if MODE["m"] == "fresh":
        return orig(self, i)
    if i == 0:
        if MODE["m"] == "fixed":
            self.eps = torch.randn(self.x.shape, generator=self.stream)
        else:   # the sample's own starting noise x_T (same generator, same first draw)
            self.eps = torch.randn(self.x.shape, generator=torch.Generator().manual_seed(0))
    self.x_t = self.signal[i] * self.x + self.noise_scale[i] * self.eps.contiguous(memory_format=self.memory_format)
S._AnchorSide.noise_to_step = patched
for spec in sys.argv[2:]:
    mode, w, layers, steps, eta = spec.split(":")
    MODE["m"] = mode
    cfg = S.SamplerConfig(w=float(w), layers=int(layers), steps=int(steps), eta=float(eta))
    t = time.time()
    c = S.generate_positives(unet, sched, real, 2, cfg, seed=0).numpy()
    flat = c.reshape(-1, *c.shape[2:])
    pred, feats = ref.predict(flat)
    _, af = ref.predict(real.numpy())
    cos = (feats.reshape(len(real), 2, -1) * af[:, None]).sum(-1).mean()
    agr = (pred == np.repeat(train.labels[idx], 2)).mean() * 100
    print(f"{spec:28s} agree {agr:5.1f} cos {cos:.2f} at0 {(flat==0).mean()*100:5.1f} le4 {(flat<=4).mean()*100:5.1f} {time.time()-t:5.1f}s", flush=True)
