"""Per-sample kornia augmentation: shapes, ranges, per-sample randomness, seeds, the recipes, CPU == GPU."""

from __future__ import annotations

import kornia.augmentation as K
import numpy as np
import pytest
import torch

from clsp.data.augment import RECIPES, blur_kernel_size, make_augment

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def batch(n: int = 16, side: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8))


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def ops_of(augment) -> dict[type, torch.nn.Module]:
    return {type(op): op for op in augment.ops}


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("size", [32, 96])
def test_dtype_shape_and_range(recipe, size):
    out = make_augment(recipe, size, MEAN, STD)(batch(6, 40))
    assert out.dtype == torch.float32 and out.shape == (6, 3, size, size)
    assert out.is_contiguous(memory_format=torch.channels_last)
    pixels = unnormalise(out)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5  # normalised from [0, 1], nothing out of range


def test_channels_first_and_last_inputs_agree():
    images = batch(4)
    augment = make_augment("simclr", 32, MEAN, STD)
    torch.manual_seed(3)
    last = augment(images)
    torch.manual_seed(3)
    first = augment(images.permute(0, 3, 1, 2).contiguous())
    torch.testing.assert_close(first, last)
    with pytest.raises(TypeError, match="uint8"):
        augment(images.float())


def test_eval_is_plain_normalisation():
    images = batch(3)
    out = make_augment("eval", 32, MEAN, STD)(images)
    expected = (images.permute(0, 3, 1, 2).float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("recipe", ["simclr", "moco"])
def test_views_differ_per_sample_within_a_batch(recipe):
    same = batch(1).expand(32, -1, -1, -1).contiguous()  # one image, 32 times
    augment = make_augment(recipe, 32, MEAN, STD)
    torch.manual_seed(0)
    views = augment(same).flatten(1)
    distances = torch.cdist(views, views)
    assert (distances + torch.eye(32) * 1e9).min() > 1e-3  # no two samples got the same augmentation
    crops = augment.ops[0]._params["src"]
    assert len(torch.unique(crops.flatten(1), dim=0)) == 32  # each sample drew its own crop box


def test_flip_is_per_sample():
    image = batch(1).expand(64, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    out = make_augment("flip", 32, MEAN, STD)(image)
    original = make_augment("eval", 32, MEAN, STD)(image[:1])
    is_flipped = torch.isclose(out, original.flip(-1)).flatten(1).all(1)
    is_same = torch.isclose(out, original).flatten(1).all(1)
    assert bool((is_flipped ^ is_same).all())  # each sample is the image or its mirror, nothing else
    assert 10 < int(is_flipped.sum()) < 54  # and the coin is tossed per sample


def test_a_seed_reproduces_the_views():
    images = batch(8)
    augment = make_augment("simclr", 32, MEAN, STD)
    torch.manual_seed(7)
    a = augment(images)
    torch.manual_seed(7)
    b = make_augment("simclr", 32, MEAN, STD)(images)
    torch.manual_seed(8)
    c = augment(images)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_simclr_recipe_matches_the_paper():
    ops = ops_of(make_augment("simclr", 32, MEAN, STD))
    assert set(ops) == {K.RandomResizedCrop, K.ColorJitter, K.RandomGrayscale, K.RandomHorizontalFlip}
    crop = ops[K.RandomResizedCrop]._param_generator
    assert ops[K.RandomResizedCrop].flags["cropping_mode"] == "resample"  # one batched warp, no per-sample loop
    assert torch.allclose(torch.as_tensor(crop.scale, dtype=torch.float32), torch.tensor([0.08, 1.0]))
    jitter = ops[K.ColorJitter]
    assert (jitter.p, jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == (0.8, 0.4, 0.4, 0.4, 0.1)
    assert ops[K.RandomGrayscale].p == 0.2 and ops[K.RandomHorizontalFlip].p == 0.5


def test_moco_recipe_and_solarize_at_one_half():
    ops = ops_of(make_augment("moco", 32, MEAN, STD))
    jitter = ops[K.ColorJitter]
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == (0.4, 0.4, 0.2, 0.1)
    solarize = ops[K.RandomSolarize]
    assert solarize.p == 0.2 and K.RandomSolarize not in ops_of(make_augment("simclr", 32, MEAN, STD))
    values = torch.tensor([0.1, 0.49, 0.5, 0.51, 0.9]).view(1, 1, 1, 5).expand(64, 3, 1, 5).contiguous()
    torch.manual_seed(0)
    out = solarize(values)
    applied = solarize._params["batch_prob"] > 0.5
    assert torch.equal(solarize._params["thresholds"], torch.full((64,), 0.5))
    torch.testing.assert_close(out[applied][:, 0, 0], torch.tensor([0.1, 0.49, 0.5, 0.49, 0.1]).expand(int(applied.sum()), 5))
    torch.testing.assert_close(out[~applied], values[~applied])


def test_blur_only_at_96_px_and_above():
    for recipe in ("simclr", "moco"):
        assert K.RandomGaussianBlur not in ops_of(make_augment(recipe, 32, MEAN, STD))
        assert K.RandomGaussianBlur not in ops_of(make_augment(recipe, 64, MEAN, STD))
        blur = ops_of(make_augment(recipe, 96, MEAN, STD))[K.RandomGaussianBlur]
        assert blur.p == 0.5
    assert blur_kernel_size(96) == 9 and blur_kernel_size(224) == 23  # 10% of the side, odd (SimCLR)


def test_parameters_are_independent_per_sample_with_the_right_rates():
    augment = make_augment("simclr", 16, MEAN, STD)
    torch.manual_seed(0)
    augment(batch(1000, 16))
    ops = ops_of(augment)
    rate = {op: float(ops[op]._params["batch_prob"].float().mean()) for op in (K.ColorJitter, K.RandomGrayscale, K.RandomHorizontalFlip)}
    assert abs(rate[K.ColorJitter] - 0.8) < 0.05 and abs(rate[K.RandomGrayscale] - 0.2) < 0.05
    assert abs(rate[K.RandomHorizontalFlip] - 0.5) < 0.05
    src = ops[K.RandomResizedCrop]._params["src"]
    area = (src[:, 1, 0] - src[:, 0, 0] + 1) * (src[:, 2, 1] - src[:, 1, 1] + 1) / 16**2
    assert 0.07 < float(area.min()) and float(area.max()) <= 1.0 + 1e-6 and float(area.std()) > 0.15


def test_moving_the_module_keeps_sampling_on_the_cpu_generator():
    augment = make_augment("simclr", 96, MEAN, STD).to(torch.float64)
    for op in augment.ops:
        if op._param_generator is not None:
            assert op._param_generator.device == torch.device("cpu") and op._param_generator.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.parametrize("recipe", RECIPES)
def test_cpu_and_gpu_paths_are_the_same_recipe(recipe):
    """Parameters come from the CPU generator on both paths, so one seed gives the same views on both devices;
    what remains can differ only by the float arithmetic of the kernels."""
    images = batch(64, 96)
    cpu_aug = make_augment(recipe, 96, MEAN, STD)
    gpu_aug = make_augment(recipe, 96, MEAN, STD).to("cuda")
    torch.manual_seed(11)
    on_cpu = cpu_aug(images)
    torch.manual_seed(11)
    on_gpu = gpu_aug(images.cuda())
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float32
    for op_cpu, op_gpu in zip(cpu_aug.ops, gpu_aug.ops):
        for key, value in op_cpu._params.items():
            torch.testing.assert_close(op_gpu._params[key].cpu(), value.cpu(), msg=f"{type(op_cpu).__name__}.{key}")
    diff = (unnormalise(on_gpu.cpu()) - unnormalise(on_cpu)).abs()
    assert float(diff.mean()) < 1e-3 and float(diff.max()) < 0.05


@pytest.mark.parametrize("recipe", ["simclr", "moco", "eval"])
def test_grey_batch_is_augmented_as_its_rgb_copy(recipe):
    """Grey data stays one channel up to the encoder; the views equal those of the grey image replicated to RGB
    (same seed), so the encoder sees three identical channels and colour jitter keeps them grey."""
    grey = batch(8)[..., :1]
    augment = make_augment(recipe, 32, MEAN[:1] * 3, STD[:1] * 3)
    torch.manual_seed(5)
    from_grey = augment(grey)
    torch.manual_seed(5)
    from_rgb = augment(grey.expand(-1, -1, -1, 3).contiguous())
    assert from_grey.shape == (8, 3, 32, 32)
    torch.testing.assert_close(from_grey, from_rgb)
    torch.testing.assert_close(from_grey[:, 0], from_grey[:, 2])


def test_crops_come_from_the_input_at_its_own_size():
    """STL-10 as the release: 64 px views cropped from the 96 px images, not from images resized to 64."""
    augment = make_augment("simclr", 64, MEAN, STD)
    torch.manual_seed(0)
    out = augment(batch(256, 96))
    assert out.shape == (256, 3, 64, 64)
    corners = ops_of(augment)[K.RandomResizedCrop]._params["src"]   # crop boxes in the input's pixels
    assert float(corners.min()) >= 0 and 80 < float(corners.max()) <= 95
    resized = make_augment("flip", 64, MEAN, STD)(batch(2, 96))     # a recipe without a crop resizes
    assert resized.shape == (2, 3, 64, 64)


def test_crop_min_scale_bounds_the_crop_area():
    """crop_min_scale is the smallest share of the image a random resized crop keeps (the paper: 0.08)."""
    def areas(min_scale):
        augment = make_augment("simclr", 32, MEAN, STD, crop_min_scale=min_scale)
        torch.manual_seed(0)
        augment(batch(512, 32))
        box = ops_of(augment)[K.RandomResizedCrop]._params["src"]                # (B, 4, 2) corners in pixels
        side = (box.max(1).values - box.min(1).values + 1)
        return (side[:, 0] * side[:, 1]) / 32 ** 2

    default, mild = areas(0.08), areas(0.5)
    assert float(default.min()) < 0.15 and float(mild.min()) > 0.45
    assert float(mild.max()) <= 1.0 + 1e-6
