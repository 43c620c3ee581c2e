"""Probe: exact-black and near-black pixel shares of plain samples of the shipped model, per sampler setting
(256 samples, seed 0). Usage: plain_pixels.py SAMPLER:STEPS[:eta=E] ..."""
import sys, time, torch
from clsp.diffusion.model import load_model
from clsp.diffusion.sampler import SamplerConfig, sample
torch.set_num_threads(1)
unet, sched = load_model("clsp:fashion-mnist-16")
unet = unet.float()
for spec in sys.argv[1:]:
    name, steps, *rest = spec.split(":")
    kw = dict(sampler=name, steps=int(steps))
    for r in rest:
        k, v = r.split("=")
        kw[k] = {"eta": float, "clip_x0": lambda s: s == "1", "timestep_spacing": str}[k](v)
    cfg = SamplerConfig(**kw)
    t = time.time()
    x = sample(unet, sched, 256, cfg, seed=0)
    v = x.flatten().long()
    h = torch.bincount(v, minlength=256).float() / v.numel() * 100
    print(f"{spec:40s} at0 {h[0]:5.1f} at1 {h[1]:4.1f} at2 {h[2]:4.1f} le4 {h[:5].sum():5.1f} at255 {h[255]:4.2f}  {time.time()-t:5.1f}s", flush=True)
