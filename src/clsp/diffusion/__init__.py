"""Stage 1 and the heart of stage 2: UNet presets (`unet`), the diffusers-layout model directory (`model`),
noise schedules and samplers (`schedulers`), DDPM training (`train`) and CLSP's interpolating sampler
(`sampler`). Modules import torch/diffusers themselves; importing the package is free."""
