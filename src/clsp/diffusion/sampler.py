"""Plain sampling and CLSP's interpolated sampling (PAPER.md, stage 2).

At every denoising step t, for a sample x_t and its anchor image x_a:

    x_a,t    = sqrt(abar_t) x_a + sqrt(1 - abar_t) eps_a        fresh eps_a at every step
    h_anchor = mid(down(x_a,t, t))                               `anchor_features`, hook inactive
    h        = mid(down(x_t, t))                                 inside the sample's own UNet forward
    h       <- w h + (1 - w) h_anchor                            `Interpolation`, a forward hook
    eps_hat  = up(h, skips of x_t, t)                            skip connections stay the sample's
    x_{t-1}  = scheduler.step(eps_hat, t, x_t)

With `layers` = n > 1 (clsp's own extension: neither the paper nor the release has it; the release's
`forward_with_anchor` computes the anchor's skip features and never uses them) the last n - 1 skip
connections of the down path, the deepest ones, are mixed the same way, s <- w s + (1 - w) s_anchor,
before the up path reads them; n = 1 is the paper's method.

A class-conditional model (`conditional: true` in diffusion training: diffusers' class embedding, the
last class index the null class of label dropout) samples each anchor's own class c, with classifier-free
guidance g (`guidance`, the release's convention):

    eps_hat  = (1 + g) eps(x_t, c) - g eps(x_t, null)          g = 0 (or None): plain conditional sampling

With interpolation (w < 1) each of the two predictions is the interpolated one: its anchor features come
from the anchor's own pass under the same class input (c, or null).

A partial-noise start (`start` = s < 1, GenView / SDEdit) runs only the last floor(s * steps) steps: the
trajectory begins at its anchor noised to the first step kept, t0 ~ s*T, with its own starting noise,

    x_t0     = sqrt(abar_t0) x_a + sqrt(1 - abar_t0) eps           eps: the sample stream's first draw

and everything above (w, layers, guidance) applies from there. s = 1 is the full run from pure noise, bit for bit.

Random streams: the sample stream (initial noise x_T, the sampler's own noise) is one generator seeded
with `seed` and drawn for all n trajectories at once, step by step, exactly as `sample` draws it;
the anchor noise comes from a second generator. So w = 1 reproduces `sample` bit for bit, and the
trajectories' random draws do not depend on `batch_size` (which only bounds memory per UNet call).
All n trajectories' states live on the device; the UNet runs over them in batches of `batch_size`,
and one scheduler (one multistep state) advances them all.
"""

from __future__ import annotations

import contextlib

import torch

from clsp.config import check
from clsp.diffusion.config import SamplerConfig, steps_run  # noqa: F401  (steps_run re-exported)
from clsp.diffusion.schedulers import make_scheduler, step_kwargs
from clsp.errors import UserError
from clsp.training import step_seed


# -- the two pieces of the method: the anchor path and the bottleneck hook ----------------------------

def anchor_features(unet, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """The mid-block output of `unet` on `sample` at `timestep`: UNet2DModel.forward up to the mid block."""
    return anchor_path(unet, sample, timestep, 0)[0]


def anchor_path(unet, sample: torch.Tensor, timestep: torch.Tensor, skips: int,
                class_labels: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple]:
    """(mid-block output, the last `skips` skip connections of the down path) of `unet` on `sample`
    (at `class_labels` for a class-conditional UNet).

    Mirrors diffusers' forward step by step (centre, time and class embedding, conv_in, down blocks, mid
    block) and skips the up path, which is 73% of the cost of a forward the anchor does not need.
    """
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    timesteps = timestep if timestep.ndim else timestep[None]
    timesteps = timesteps.to(sample.device) * torch.ones(sample.shape[0], dtype=timesteps.dtype, device=sample.device)
    emb = unet.time_embedding(unet.time_proj(timesteps).to(dtype=unet.dtype))
    if unet.class_embedding is not None:
        if class_labels is None:
            raise UserError("a class-conditional UNet needs class labels for the anchor's pass")
        emb = emb + unet.class_embedding(class_labels).to(dtype=unet.dtype)
    skip_sample = sample
    h = unet.conv_in(sample)
    res_samples = (h,)
    for block in unet.down_blocks:
        if hasattr(block, "skip_conv"):
            h, block_res, skip_sample = block(hidden_states=h, temb=emb, skip_sample=skip_sample)
        else:
            h, block_res = block(hidden_states=h, temb=emb)
        res_samples += block_res
    return unet.mid_block(h, emb), (res_samples[len(res_samples) - skips:] if skips else ())


class Interpolation:
    """Forward hooks that mix the anchor's features into the sample's: h <- w h + (1 - w) h_anchor on the
    mid block's output, and with `layers` = n > 1 the same on the last n - 1 skip connections as the up
    blocks receive them.

    Inactive (outputs unchanged) unless inside `with hook.anchor(h_anchor, skips_anchor):`, so the anchor's
    own pass through the mid block is never interpolated.
    """

    def __init__(self, unet, w: float, layers: int = 1) -> None:
        self.unet, self.w, self.skips = unet, float(w), layers - 1
        n_skips = 1 + sum(len(block.resnets) + (block.downsamplers is not None and len(block.downsamplers) or 0)
                          for block in unet.down_blocks)
        if self.skips > n_skips:
            raise UserError(f"layers = {layers} asks for {self.skips} skip connections, but this UNet has {n_skips}")
        self.h_anchor: torch.Tensor | None = None
        self.skips_anchor: tuple = ()
        self._handles: list = []

    def __enter__(self) -> "Interpolation":
        self._handles = [self.unet.mid_block.register_forward_hook(self._mid_hook)]
        if self.skips:
            consumed = 0                                   # the up path reads the skip connections deepest first
            for block in self.unet.up_blocks:
                width = len(block.resnets)
                mixed = max(0, min(width, self.skips - consumed))   # of this block's skips, the last `mixed`
                if mixed:
                    self._handles.append(block.register_forward_pre_hook(self._skip_hook(consumed, mixed)))
                consumed += width
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self.h_anchor, self.skips_anchor = None, ()

    @contextlib.contextmanager
    def anchor(self, h_anchor: torch.Tensor, skips_anchor: tuple = ()):
        self.h_anchor, self.skips_anchor = h_anchor, skips_anchor
        try:
            yield
        finally:
            self.h_anchor, self.skips_anchor = None, ()

    def _mix(self, own: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        return self.w * own + (1.0 - self.w) * anchor

    def _mid_hook(self, module, args, h):
        if self.h_anchor is None:
            return None
        return self._mix(h, self.h_anchor)

    def _skip_hook(self, consumed: int, mixed: int):
        """A pre-hook for an up block that receives skips `consumed` .. `consumed + width` counted from the deepest:
        its tuple lists them shallowest first, so the deepest `mixed` are its last entries."""
        def hook(module, args):
            if self.h_anchor is None:
                return None
            sample, res, *rest = args
            res = tuple(res)
            for i in range(mixed):
                position = len(res) - 1 - i                    # the (consumed + i)-th deepest skip overall
                res = res[:position] + (self._mix(res[position], self.skips_anchor[-1 - consumed - i]),) + res[position + 1:]
            return (sample, res, *rest)
        return hook


# -- public functions ------------------------------------------------------------------------------

def sample(unet, scheduler_config: dict, n: int, cfg: SamplerConfig, seed: int, device="cpu",
           progress: bool = False, class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """n samples as uint8 (n, H, W, C) on the CPU (the UNet is moved to `device`). A class-conditional model
    samples `class_labels` (n,) with cfg.guidance, or without them its null class (its unconditional branch)."""
    if class_labels is None and is_conditional(unet):
        class_labels = torch.full((n,), null_class(unet), dtype=torch.long)
    return _denoise(unet, scheduler_config, n, cfg, seed, torch.device(device), None, 1, progress, class_labels)


def generate_positives(unet, scheduler_config: dict, anchors: torch.Tensor, k: int, cfg: SamplerConfig, seed: int,
                       device="cpu", progress: bool = False, anchor_labels: torch.Tensor | None = None) -> torch.Tensor:
    """K interpolated candidates per anchor: uint8 anchors (B, H, W, C) -> uint8 (B, K, H, W, C) on the CPU
    (the UNet is moved to `device`). A class-conditional model samples each anchor's class, `anchor_labels` (B,)
    (an unconditional one ignores them).

    Trajectory j = b * K + c is candidate c of anchor b, so with w = 1 the result is
    `sample(..., n=B*K, seed)` reshaped (with the labels repeated K times each).
    """
    if anchors.dtype != torch.uint8 or anchors.ndim != 4:
        raise UserError(f"anchors must be uint8 (B, H, W, C), got {anchors.dtype} {tuple(anchors.shape)}")
    check(k >= 1, "k", f"must be >= 1, got {k}")
    b = anchors.shape[0]
    labels = None
    if is_conditional(unet):
        if anchor_labels is None:
            raise UserError("the diffusion model is class-conditional: it samples each anchor's own class, so the "
                            "anchors need labels (a labelled dataset split)")
        labels = torch.as_tensor(anchor_labels, dtype=torch.long).repeat_interleave(k)
    out = _denoise(unet, scheduler_config, b * k, cfg, seed, torch.device(device), anchors, k, progress, labels)
    return out.view(b, k, *out.shape[1:])


def is_conditional(unet) -> bool:
    """Whether `unet` is class-conditional (diffusers' class embedding)."""
    return unet.class_embedding is not None


def null_class(unet) -> int:
    """The class index a class-conditional UNet was trained with for dropped labels: the last of its embeddings."""
    return int(unet.config.num_class_embeds) - 1


def guided(eps_class: torch.Tensor, eps_null: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance as the release writes it: (1 + g) eps(x, c) - g eps(x, null)."""
    return (1.0 + guidance) * eps_class - guidance * eps_null


def anchor_noise_seed(seed: int) -> int:
    """The seed of the anchor-noise stream, derived from the sample seed but independent of it."""
    return step_seed(seed, 0, 0, "clsp-anchor-noise")


def to_unit_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [-1, 1], the range the UNet was trained on."""
    return images_uint8.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C) by round((x + 1) * 127.5), saturating."""
    if clip:
        x = x.clamp(-1.0, 1.0)
    return ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


# -- the loop --------------------------------------------------------------------------------------

class _AnchorSide:
    """The anchors' half of a step: x_a,t with fresh noise from the anchor stream, then h_anchor.

    Without share_anchor each of the K candidates has its own copy of its anchor and its own noise
    (the paper); with it, one noised anchor and one anchor pass per anchor serve its K candidates.
    """

    def __init__(self, anchors: torch.Tensor, k: int, shared: bool, scheduler, seed: int, device: torch.device,
                 memory_format: torch.memory_format) -> None:
        x = to_unit_range(anchors.to(device)).contiguous(memory_format=memory_format)
        self.x = x if shared else x.repeat_interleave(k, dim=0)
        self.k, self.shared, self.memory_format = k, shared, memory_format
        abar = scheduler.alphas_cumprod[scheduler.timesteps].to(device)      # copied once, indexed on the device
        self.signal, self.noise_scale = abar.sqrt(), (1.0 - abar).sqrt()
        self.stream = torch.Generator(device).manual_seed(anchor_noise_seed(seed))
        self.x_t = self.x

    def noise_to_step(self, i: int) -> None:
        """x_a,t = sqrt(abar_t) x_a + sqrt(1 - abar_t) eps_a, eps_a fresh at every step."""
        eps = torch.randn(self.x.shape, generator=self.stream, device=self.x.device)
        self.x_t = self.signal[i] * self.x + self.noise_scale[i] * eps.contiguous(memory_format=self.memory_format)

    def features(self, unet, t: torch.Tensor, start: int, stop: int, skips: int = 0,
                 labels: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple]:
        """(h_anchor, the last `skips` anchor skip connections) for trajectories [start, stop), at the class
        inputs `labels` (one per trajectory) of a class-conditional UNet (module-level `anchor_features` /
        `anchor_path`, so tests can watch them)."""
        def run(x, y):
            if y is not None:
                return anchor_path(unet, x, t, skips, y)
            return (anchor_features(unet, x, t), ()) if not skips else anchor_path(unet, x, t, skips)

        if not self.shared:
            return run(self.x_t[start:stop], None if labels is None else labels[start:stop])
        first, last = start // self.k, (stop - 1) // self.k + 1
        h, res = run(self.x_t[first:last], None if labels is None else labels[first * self.k:last * self.k:self.k])
        window = slice(start - first * self.k, stop - first * self.k)
        spread = lambda x: x.repeat_interleave(self.k, dim=0)[window]  # noqa: E731
        return spread(h), tuple(spread(r) for r in res)


@torch.no_grad()
def _denoise(unet, scheduler_config: dict, n: int, cfg: SamplerConfig, seed: int, device: torch.device,
             anchors: torch.Tensor | None, k: int, progress: bool, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Run n trajectories (with anchors: n = B * K, trajectory j towards anchor j // K), at class `labels` (n,)
    for a class-conditional UNet; moves `unet` to `device`."""
    check(n >= 1, "n", f"must be >= 1, got {n}")
    labels, null_labels, guidance = _conditioning(unet, cfg, labels, n, device)
    height, width = _sample_size(unet, anchors)
    channels = unet.config.in_channels
    if anchors is not None and tuple(anchors.shape[1:]) != (height, width, channels):
        raise UserError(f"anchors are {tuple(anchors.shape[1:])} (H, W, C) but the model makes {(height, width, channels)}")
    on_gpu = device.type == "cuda"
    memory_format = torch.channels_last     # on CPUs too: the UNet forward ran 1.12x faster there (issue 19)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu)
    was_training = unet.training
    unet.eval().to(device=device, memory_format=memory_format)

    scheduler = make_scheduler(scheduler_config, cfg.sampler, cfg.steps, cfg.timestep_spacing, cfg.clip_x0)
    timesteps = scheduler.timesteps                       # host tensor: the scheduler indexes its tables with it
    timesteps_device = timesteps.to(device)               # the UNet's time input, copied once
    sample_stream = torch.Generator(device).manual_seed(seed)
    x = torch.randn((n, channels, height, width), generator=sample_stream, device=device).contiguous(memory_format=memory_format)
    kwargs = step_kwargs(cfg.sampler, cfg.eta, sample_stream)
    anchor_side = None if anchors is None else _AnchorSide(anchors, k, cfg.share_anchor, scheduler, seed, device, memory_format)
    first = len(timesteps) - steps_run(len(timesteps), cfg.start)
    if first:                                             # a partial-noise start: x = x_a noised to the first step kept
        x = partial_noise_start(scheduler, anchor_side, first, x)
    hook = Interpolation(unet, cfg.w, cfg.layers) if anchors is not None else None
    batch = cfg.batch_size if not cfg.share_anchor else max(k, cfg.batch_size // k * k)   # whole anchors per batch

    def predict(t_unet: torch.Tensor, start: int, stop: int, y: torch.Tensor | None) -> torch.Tensor:
        """The noise prediction for trajectories [start, stop) at class inputs y (n,) (None: unconditional),
        interpolated with their anchors' features under the same class inputs when there are anchors."""
        y_batch = None if y is None else y[start:stop]
        if anchor_side is None:
            return unet(x[start:stop], t_unet, class_labels=y_batch).sample
        with hook.anchor(*anchor_side.features(unet, t_unet, start, stop, cfg.layers - 1, y)):
            return unet(x[start:stop], t_unet, class_labels=y_batch).sample

    try:
        with hook or contextlib.nullcontext():
            for i, t in enumerate(_progress(timesteps, progress, first), start=first):
                t_unet = timesteps_device[i]
                if anchor_side is not None:
                    anchor_side.noise_to_step(i)
                eps = torch.empty_like(x)
                for start in range(0, n, batch):
                    stop = min(n, start + batch)
                    with autocast:
                        eps[start:stop] = predict(t_unet, start, stop, labels) if not guidance else \
                            guided(predict(t_unet, start, stop, labels), predict(t_unet, start, stop, null_labels), guidance)
                x = scheduler.step(eps, t, x, **kwargs).prev_sample
    finally:
        unet.train(was_training)
    return to_uint8(x, clip=cfg.clip_final).cpu()


def partial_noise_start(scheduler, anchor_side: "_AnchorSide | None", first: int, noise: torch.Tensor) -> torch.Tensor:
    """The state a trajectory started at `scheduler.timesteps[first]` begins from: its anchor noised to that step
    with the trajectory's own starting noise (the sample stream's first draw, so the anchor-noise stream and every
    later draw are those of a full-length run),

        x_t0 = sqrt(abar_t0) x_a + sqrt(1 - abar_t0) eps.

    A multistep solver is told where its run begins (`set_begin_index`, as diffusers' img2img pipelines do)."""
    if anchor_side is None:
        raise UserError("sampler.start < 1 starts from the anchors, noised: it needs anchors (plain sampling starts "
                        "from pure noise; set start: 1)")
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(first)
    x_a = anchor_side.x if not anchor_side.shared else anchor_side.x.repeat_interleave(anchor_side.k, dim=0)
    return anchor_side.signal[first] * x_a + anchor_side.noise_scale[first] * noise


def check_guidance(unet, cfg: SamplerConfig) -> None:
    """Guidance needs a class-conditional model: checked before a command writes anything."""
    if cfg.guidance is not None and not is_conditional(unet):
        raise UserError(f"sampler.guidance = {cfg.guidance} needs a class-conditional diffusion model, and this one "
                        "is unconditional; unset guidance, or train one with conditional=true")


def _conditioning(unet, cfg: SamplerConfig, labels: torch.Tensor | None, n: int, device: torch.device):
    """(class inputs (n,), null class inputs (n,), guidance g) on the device; (None, None, 0) for an unconditional UNet."""
    check_guidance(unet, cfg)
    if not is_conditional(unet):
        return None, None, 0.0
    classes = null_class(unet)
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != (n,):
        raise UserError(f"{n} trajectories need {n} class labels, got shape {tuple(labels.shape)}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) > classes):
        raise UserError(f"class labels must be in 0 .. {classes - 1} (the model's {classes} classes) or {classes} (its "
                        f"null class), got {int(labels.min())} .. {int(labels.max())}; is the model trained on this dataset?")
    labels = labels.to(device)
    return labels, torch.full_like(labels, classes), float(cfg.guidance or 0.0)


def _sample_size(unet, anchors: torch.Tensor | None) -> tuple[int, int]:
    size = unet.config.sample_size
    if size is None:
        if anchors is None:
            raise UserError("the UNet's config has no sample_size; cannot tell what size of image to sample")
        return int(anchors.shape[1]), int(anchors.shape[2])
    return (int(size[0]), int(size[1])) if isinstance(size, (list, tuple)) else (int(size), int(size))


def _progress(timesteps: torch.Tensor, enabled: bool, first: int = 0):
    if not enabled:
        return timesteps[first:]
    from tqdm.auto import tqdm

    return tqdm(timesteps[first:], desc="denoising", unit="step")
