"""The interpolating sampler: the anchor path, the hook, the random streams, the schedulers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_helpers import perturbed_tiny_unet

from clsp.diffusion import sampler as sampler_module
from clsp.diffusion.sampler import (SamplerConfig, anchor_features, anchor_noise_seed, generate_positives, sample,
                                    to_unit_range)
from clsp.diffusion.schedulers import make_scheduler
from clsp.errors import UserError

STEPS = 4


def capture(module, store: list, pre: bool = False):
    """Record a module's outputs (or its positional inputs with pre=True) on every call."""
    if pre:
        return module.register_forward_pre_hook(lambda m, args: store.append(tuple(a for a in args)))
    return module.register_forward_hook(lambda m, args, out: store.append(out))


def test_anchor_path_equals_the_mid_block_output_of_a_plain_forward(tiny_unet):
    torch.manual_seed(1)
    x, t = torch.randn(5, 1, 8, 8), torch.tensor([0, 10, 250, 600, 999])
    seen = []
    handle = capture(tiny_unet.mid_block, seen)
    with torch.no_grad():
        tiny_unet(x, t)
        handle.remove()
        mine = anchor_features(tiny_unet, x, t)
        single = anchor_features(tiny_unet, x[:1], torch.tensor(0))     # a 0-dim timestep broadcasts
    assert torch.equal(mine, seen[0])
    torch.testing.assert_close(single, seen[0][:1])                 # (another batch size: other kernels)


@pytest.mark.parametrize("name,share", [("ddim", False), ("ddim", True), ("dpmsolver++", False), ("dpmsolver++", True),
                                        ("unipc", False), ("ddpm", False)])
def test_w1_reproduces_plain_sampling_bit_for_bit(tiny_unet, schedule, digit_anchors, name, share):
    cfg = SamplerConfig(sampler=name, steps=STEPS, w=1.0, eta=0.5, share_anchor=share, batch_size=5)
    plain = sample(tiny_unet, schedule, 3 * 4, cfg, seed=7)
    positives = generate_positives(tiny_unet, schedule, digit_anchors[:3], 4, cfg, seed=7)
    assert positives.shape == (3, 4, 8, 8, 1) and positives.dtype == torch.uint8
    assert torch.equal(positives.reshape(12, 8, 8, 1), plain)
    interpolated = generate_positives(tiny_unet, schedule, digit_anchors[:3], 4, SamplerConfig(
        sampler=name, steps=STEPS, w=0.0, eta=0.5, share_anchor=share, batch_size=5), seed=7)
    assert not torch.equal(interpolated, positives)                     # the hook is live


def test_rgb_model_and_anchors_keep_three_channels(schedule):
    """Colour data: a 3-channel model, RGB anchors, RGB candidates; w = 1 still equals plain sampling."""
    unet = perturbed_tiny_unet(8, seed=3, channels=3)
    anchors = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
    cfg = SamplerConfig(steps=STEPS, w=1.0)
    positives = generate_positives(unet, schedule, anchors, 2, cfg, seed=4)
    assert positives.shape == (2, 2, 8, 8, 3)
    assert torch.equal(positives.reshape(4, 8, 8, 3), sample(unet, schedule, 4, cfg, seed=4))
    with pytest.raises(UserError, match=r"anchors are \(8, 8, 1\)"):
        generate_positives(unet, schedule, anchors[..., :1].contiguous(), 2, cfg, seed=4)


def test_results_depend_on_seed_not_on_batching(tiny_unet, schedule, digit_anchors):
    def run(batch_size, seed=3):
        return generate_positives(tiny_unet, schedule, digit_anchors, 3,
                                  SamplerConfig(steps=STEPS, eta=1.0, batch_size=batch_size), seed=seed)

    reference = run(12)
    assert torch.equal(reference, run(12))
    # The random draws are per step for all trajectories, so the memory bound changes no draw.
    assert (reference.float() - run(5).float()).abs().max() <= 1
    assert not torch.equal(reference, run(12, seed=4))


def test_w0_uses_the_anchor_bottleneck_and_the_sample_skips(tiny_unet, schedule, digit_anchors, monkeypatch):
    anchors_h, up_inputs, unet_inputs = [], [], []
    original = sampler_module.anchor_features

    def recording_anchor_features(unet, x, t):
        h = original(unet, x, t)
        anchors_h.append(h)
        return h

    monkeypatch.setattr(sampler_module, "anchor_features", recording_anchor_features)
    hooks = [capture(tiny_unet.up_blocks[0], up_inputs, pre=True),
             tiny_unet.register_forward_pre_hook(lambda m, args: unet_inputs.append(args))]
    generate_positives(tiny_unet, schedule, digit_anchors[:2], 2, SamplerConfig(steps=STEPS, w=0.0, batch_size=4), seed=0)
    for h in hooks:
        h.remove()

    assert len(anchors_h) == len(up_inputs) == len(unet_inputs) == STEPS
    for h_anchor, (h_used, skips, _), (x_t, t) in zip(anchors_h, up_inputs, unet_inputs):
        assert torch.equal(h_used, h_anchor)                           # w = 0: the bottleneck is the anchor's
        own = []
        handle = capture(tiny_unet.up_blocks[0], own, pre=True)
        with torch.no_grad():
            tiny_unet(x_t, t)                                            # a plain forward of the same sample
        handle.remove()
        assert all(torch.equal(a, b) for a, b in zip(skips, own[0][1]))  # the skips are the sample's own
        assert not torch.equal(own[0][0], h_anchor)


def test_hook_mixes_w_h_with_one_minus_w_anchor(tiny_unet, schedule, digit_anchors, monkeypatch):
    raw, used, anchor_h = [], [], []
    handles = [capture(tiny_unet.mid_block, raw), capture(tiny_unet.up_blocks[0], used, pre=True)]
    original = sampler_module.anchor_features
    monkeypatch.setattr(sampler_module, "anchor_features", lambda u, x, t: anchor_h.append(original(u, x, t)) or anchor_h[-1])
    generate_positives(tiny_unet, schedule, digit_anchors[:2], 1, SamplerConfig(steps=2, w=0.3), seed=0)
    for h in handles:
        h.remove()
    own = raw[1::2]                                                      # raw[0::2] are the anchor passes
    assert len(own) == len(used) == 2
    for h, h_a, (h_used, *_rest) in zip(own, anchor_h, used):
        torch.testing.assert_close(h_used, 0.3 * h + 0.7 * h_a, rtol=0, atol=1e-6)


@pytest.mark.parametrize("share", [False, True])
def test_anchor_is_noised_at_the_current_timestep_with_fresh_noise(tiny_unet, schedule, digit_anchors, monkeypatch, share):
    calls = []
    original = sampler_module.anchor_features
    monkeypatch.setattr(sampler_module, "anchor_features", lambda u, x, t: calls.append((x.clone(), t.clone())) or original(u, x, t))
    b, k = 4, 3
    cfg = SamplerConfig(steps=10, w=0.1, share_anchor=share, batch_size=64)
    generate_positives(tiny_unet, schedule, digit_anchors, k, cfg, seed=5)

    scheduler = make_scheduler(schedule, "ddim", 10)
    assert [int(t) for _, t in calls] == scheduler.timesteps.tolist()        # the current step's t, every step
    x_a = to_unit_range(digit_anchors)
    if not share:
        x_a = x_a.repeat_interleave(k, dim=0)                                # independent noise per candidate
    noises = []
    for (x_t, t), step_t in zip(calls, scheduler.timesteps):
        assert x_t.shape == x_a.shape                                        # shared: one pass per anchor
        abar = scheduler.alphas_cumprod[step_t]
        eps = (x_t - abar.sqrt() * x_a) / (1 - abar).sqrt()                  # invert x_a,t = sqrt(abar) x_a + sqrt(1-abar) eps
        assert abs(eps.mean()) < 0.15 and 0.85 < eps.std() < 1.15             # a standard normal draw ...
        noises.append(eps.flatten())
    flat = torch.stack(noises)
    corr = torch.corrcoef(flat)
    assert (corr - torch.eye(len(flat))).abs().max() < 0.2                   # ... fresh at every step
    if not share:                                                            # and per candidate of the same anchor
        first = noises[0].view(b * k, -1)
        assert not torch.allclose(first[0], first[1], atol=1e-3)
    # The anchor stream is not the sample stream: it never equals the initial noise x_T.
    x_T = torch.randn((b * k, 1, 8, 8), generator=torch.Generator().manual_seed(5)).flatten()
    assert not torch.allclose(noises[0], x_T[: noises[0].numel()], atol=1e-3)
    assert anchor_noise_seed(5) != 5


def test_ddim_defaults_follow_the_release(schedule):
    """The release samples at linspace(-1, T-1, steps+1) truncated to int: 999, 989, ..., 9, then x0."""
    cfg = SamplerConfig()
    assert (cfg.sampler, cfg.steps, cfg.eta, cfg.w, cfg.clip_final, cfg.share_anchor) == ("ddim", 100, 0.1, 0.1, True, False)
    scheduler = make_scheduler(schedule, cfg.sampler, cfg.steps, cfg.timestep_spacing, cfg.clip_x0)
    release = np.linspace(-1, 999, 101).astype(int)[::-1].tolist()       # 999, 989, ..., 9, -1
    assert scheduler.timesteps.tolist() == list(range(999, 0, -10)) == release[:-1]
    assert make_scheduler(schedule, "ddim", 100).timesteps.tolist() == release[:-1]   # the function's default too
    assert scheduler.config.clip_sample is False                          # no per-step x0 clipping
    # The last step (from t = 9) lands on x0: without noise its result is exactly the predicted x0,
    # (x_9 - sqrt(1 - abar_9) eps) / sqrt(abar_9).
    torch.manual_seed(0)
    x, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    out = scheduler.step(eps, scheduler.timesteps[-1], x, eta=0.0)
    abar = scheduler.alphas_cumprod[9]
    torch.testing.assert_close(out.prev_sample, (x - (1 - abar).sqrt() * eps) / abar.sqrt())
    torch.testing.assert_close(out.prev_sample, out.pred_original_sample, rtol=0, atol=0)


def test_the_sample_command_defaults_to_the_releases_timesteps():
    from clsp.cli import resolve_config

    cfg = resolve_config(["diffusion", "sample", "--model", "m", "--out", "o"])
    assert cfg.sampler.timestep_spacing == SamplerConfig().timestep_spacing == "trailing"


def test_bad_inputs_are_user_errors(tiny_unet, schedule, digit_anchors):
    with pytest.raises(UserError, match="uint8"):
        generate_positives(tiny_unet, schedule, digit_anchors.float(), 2, SamplerConfig(steps=2), seed=0)
    with pytest.raises(UserError, match="model makes"):
        generate_positives(tiny_unet, schedule, torch.zeros(2, 16, 16, 3, dtype=torch.uint8), 2, SamplerConfig(steps=2), seed=0)
    with pytest.raises(UserError, match="sampler"):
        SamplerConfig(sampler="euler")
    with pytest.raises(UserError, match="'w'"):
        SamplerConfig(w=1.5)


@pytest.mark.parametrize("name", ["ddim", "ddpm"])
def test_plain_sampling_matches_diffusers_own_pipeline(tiny_unet, schedule, name):
    """An oracle: diffusers' DDIMPipeline / DDPMPipeline draw the same noise in the same order."""
    from diffusers import DDIMPipeline, DDPMPipeline

    scheduler = make_scheduler(schedule, name, 6)
    generator = torch.Generator().manual_seed(21)
    if name == "ddim":
        pipe = DDIMPipeline(unet=tiny_unet, scheduler=scheduler)
        theirs = pipe(batch_size=5, generator=generator, eta=0.5, num_inference_steps=6, output_type="np").images
    else:
        pipe = DDPMPipeline(unet=tiny_unet, scheduler=scheduler)
        theirs = pipe(batch_size=5, generator=generator, num_inference_steps=6, output_type="np").images
    mine = sample(tiny_unet, schedule, 5, SamplerConfig(sampler=name, steps=6, eta=0.5), seed=21)
    assert (torch.from_numpy(theirs * 255).round() - mine.float()).abs().max() <= 1


def test_deeper_interpolation_mixes_the_deepest_skips_and_nothing_else(tiny_unet, schedule, digit_anchors, monkeypatch):
    """layers = n: the mid block and the n - 1 deepest skip connections become w own + (1 - w) anchor's, as the up
    path receives them; the shallower skips stay the sample's own. Checked against an independent forward of the
    same x_t and an independent anchor pass."""
    n_layers, w = 3, 0.3
    up_inputs, unet_inputs, anchor_passes, handles = [], [], [], []
    enter = sampler_module.Interpolation.__enter__

    def enter_then_record(self):                                 # record what the up blocks get, after the mixing hooks
        out = enter(self)
        handles.extend(b.register_forward_pre_hook(lambda m, a, i=i: up_inputs.append((i, a)))
                       for i, b in enumerate(tiny_unet.up_blocks))
        return out
    monkeypatch.setattr(sampler_module.Interpolation, "__enter__", enter_then_record)
    handles.append(tiny_unet.register_forward_pre_hook(lambda m, a: unet_inputs.append(a)))
    original = sampler_module.anchor_path
    monkeypatch.setattr(sampler_module, "anchor_path",
                        lambda u, x, t, k: anchor_passes.append((x.clone(), t.clone(), k)) or original(u, x, t, k))
    generate_positives(tiny_unet, schedule, digit_anchors[:2], 1, SamplerConfig(steps=2, w=w, layers=n_layers), seed=0)
    for h in handles:
        h.remove()
    assert [k for _, _, k in anchor_passes] == [n_layers - 1] * 2
    per_step = len(tiny_unet.up_blocks)
    for step, ((x_t, t), (x_a, t_a, _)) in enumerate(zip(unet_inputs, anchor_passes)):
        with torch.no_grad():
            own_seen, anchor_seen = [], []
            hs = [tiny_unet.up_blocks[i].register_forward_pre_hook(lambda m, a: own_seen.append(a)) for i in range(per_step)]
            tiny_unet(x_t, t)
            for h in hs:
                h.remove()
            h_a, skips_a = original(tiny_unet, x_a, t_a, 100)                  # every anchor skip, shallowest first
        used = [a for _, a in up_inputs[step * per_step:(step + 1) * per_step]]
        deepest_first_used = [s for a in used for s in reversed(a[1])]
        deepest_first_own = [s for a in own_seen for s in reversed(a[1])]
        deepest_first_anchor = list(reversed(skips_a))
        for j, (u, o, a) in enumerate(zip(deepest_first_used, deepest_first_own, deepest_first_anchor)):
            if j < n_layers - 1:
                torch.testing.assert_close(u, w * o + (1 - w) * a, rtol=0, atol=1e-5)
            else:
                assert torch.equal(u, o), j                                       # shallower skips: the sample's own


@pytest.mark.parametrize("share", [False, True])
def test_layers_1_is_the_paper_sampler_and_w1_is_plain_sampling_for_every_depth(tiny_unet, schedule, digit_anchors, share):
    cfg = SamplerConfig(steps=STEPS, w=0.2, share_anchor=share, batch_size=5)
    default = generate_positives(tiny_unet, schedule, digit_anchors[:3], 2, cfg, seed=9)
    import dataclasses
    assert torch.equal(default, generate_positives(tiny_unet, schedule, digit_anchors[:3], 2,
                                                   dataclasses.replace(cfg, layers=1), seed=9))
    deeper = generate_positives(tiny_unet, schedule, digit_anchors[:3], 2, dataclasses.replace(cfg, layers=4), seed=9)
    assert not torch.equal(deeper, default)
    plain = sample(tiny_unet, schedule, 6, cfg, seed=9)
    for layers in (2, 4, 7):
        w1 = generate_positives(tiny_unet, schedule, digit_anchors[:3], 2, dataclasses.replace(cfg, w=1.0, layers=layers), seed=9)
        assert torch.equal(w1.reshape(6, 8, 8, 1), plain), layers
    with pytest.raises(UserError, match="skip connections, but this UNet has"):
        generate_positives(tiny_unet, schedule, digit_anchors[:1], 1, dataclasses.replace(cfg, layers=50), seed=9)


@pytest.mark.parametrize("name", ["ddim", "ddpm", "dpmsolver++", "unipc"])
def test_the_sampler_table_builds_each_scheduler_and_gives_its_step_what_it_takes(schedule, name):
    """Each row: its diffusers class with its options and the spacing and clipping asked for; and its step is
    given exactly those of eta and the noise generator that the class's own `step` accepts."""
    import inspect

    from clsp.diffusion.schedulers import SAMPLER_TABLE, step_kwargs

    spec = SAMPLER_TABLE[name]
    scheduler = make_scheduler(schedule, name, 10, "leading", clip_x0=True)
    assert type(scheduler).__name__ == spec.scheduler and len(scheduler.timesteps) == 10
    assert scheduler.config.timestep_spacing == "leading"
    assert all(scheduler.config[key] == value for key, value in spec.options.items())
    assert spec.clips_x0 == (name in ("ddim", "ddpm")) and (not spec.clips_x0 or scheduler.config.clip_sample is True)
    accepted = set(inspect.signature(type(scheduler).step).parameters)
    assert set(step_kwargs(name, 0.3, torch.Generator())) == {"eta", "generator"} & accepted
    with pytest.raises(ValueError, match="unknown sampler"):
        make_scheduler(schedule, "euler", 10)


# -- the partial-noise start (sampler.start, issue 23) ------------------------------------------------

@pytest.mark.parametrize("name", ["ddim", "ddpm", "dpmsolver++", "unipc"])
def test_start_1_is_todays_sampler_and_a_partial_start_runs_the_last_steps_from_the_noised_anchor(
        tiny_unet, schedule, digit_anchors, name, monkeypatch):
    from clsp.diffusion.sampler import steps_run

    settings = dict(sampler=name, steps=5, w=0.2, layers=2, eta=0.5, batch_size=12)
    today = generate_positives(tiny_unet, schedule, digit_anchors[:3], 4, SamplerConfig(**settings), seed=7)
    assert torch.equal(generate_positives(tiny_unet, schedule, digit_anchors[:3], 4, SamplerConfig(**settings, start=1.0),
                                          seed=7), today)
    # s = 1 reads the sample stream exactly as plain sampling does (w = 1 equals `sample`)
    plain = dict(settings, w=1.0)
    assert torch.equal(generate_positives(tiny_unet, schedule, digit_anchors[:3], 4, SamplerConfig(**plain, start=1.0), seed=7)
                       .reshape(12, 8, 8, 1), sample(tiny_unet, schedule, 12, SamplerConfig(**plain), seed=7))

    inputs, timesteps = [], []
    real_forward = type(tiny_unet).forward

    def watched(self, x, t, *args, **kwargs):
        inputs.append(x.clone())
        timesteps.append(int(t))
        return real_forward(self, x, t, *args, **kwargs)

    monkeypatch.setattr(type(tiny_unet), "forward", watched)
    start = 0.4                                                     # 2 of 5 steps
    partial = generate_positives(tiny_unet, schedule, digit_anchors[:3], 4, SamplerConfig(**settings, start=start), seed=7)
    scheduler = make_scheduler(schedule, name, 5)
    kept = scheduler.timesteps[5 - steps_run(5, start):]
    assert steps_run(5, start) == 2 and timesteps == [int(t) for t in kept]       # one UNet call per kept step
    abar = scheduler.alphas_cumprod[kept[0]]
    eps = torch.randn((12, 1, 8, 8), generator=torch.Generator().manual_seed(7))  # the trajectory's own first draw
    x_a = to_unit_range(digit_anchors[:3]).repeat_interleave(4, dim=0)
    torch.testing.assert_close(inputs[0], abar.sqrt() * x_a + (1 - abar).sqrt() * eps)
    # started closer to the anchor, the candidate keeps more of it than one started from pure noise
    error = lambda c: (c.float() - digit_anchors[:3, None].float()).abs().mean()   # noqa: E731
    assert error(partial) < 0.85 * error(today)


def test_bad_starts_are_refused_in_one_line(tiny_unet, schedule, digit_anchors):
    from clsp.errors import ConfigError

    for bad in (0.0, -0.2, 1.5):
        with pytest.raises(ConfigError, match=r"'start'.*\(0, 1\]"):
            SamplerConfig(start=bad)
    with pytest.raises(ConfigError, match=r"leaves 0 steps"):
        SamplerConfig(steps=10, start=0.05)
    with pytest.raises(UserError, match="needs anchors"):
        sample(tiny_unet, schedule, 2, SamplerConfig(steps=4, start=0.5), seed=0)
