"""Probe: the model's own precision. Noise real images to t, predict x0 in one step, count exact-black pixels."""
import numpy as np, torch
from clsp.data.config import DatasetConfig, load_split
from clsp.diffusion.model import load_model
from diffusers import DDPMScheduler
torch.set_num_threads(1)
train = load_split(DatasetConfig(name="fashion-mnist", size=16), "train")
x = torch.from_numpy(train.images[:512]).permute(0, 3, 1, 2).float() / 127.5 - 1
unet, cfg = load_model("clsp:fashion-mnist-16")
abar = DDPMScheduler.from_config(cfg).alphas_cumprod
print(f"real: at0 {(x == -1).float().mean()*100:.1f}")
g = torch.Generator().manual_seed(0)
for t in (0, 9, 49, 99, 199):
    eps = torch.randn(x.shape, generator=g)
    xt = abar[t].sqrt() * x + (1 - abar[t]).sqrt() * eps
    with torch.no_grad():
        e = unet(xt, t).sample
    x0 = ((xt - (1 - abar[t]).sqrt() * e) / abar[t].sqrt()).clamp(-1, 1)
    u = ((x0 + 1) * 127.5).round()
    bg = x == -1
    err = (x0 - x)[bg]
    print(f"t={t:3d} at0 {(u == 0).float().mean()*100:5.1f} le4 {(u <= 4).float().mean()*100:5.1f} "
          f"background: mean err {err.mean()*127.5:+.2f} levels, std {err.std()*127.5:.2f} levels")
