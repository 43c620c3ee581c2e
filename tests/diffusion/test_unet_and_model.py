"""UNet presets and the diffusers-layout model directory."""

from __future__ import annotations

import json

import pytest
import torch

from clsp.diffusion.model import check_model_matches, load_model, save_model
from clsp.diffusion.sampler import anchor_features
from clsp.diffusion.unet import PRESETS, make_unet
from clsp.errors import UserError


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# google/ddpm-cifar10-32's unet config.json, as published (the public checkpoint the paper's UNet matches).
GOOGLE_DDPM_CIFAR10_32 = json.loads("""{
  "_class_name": "UNet2DModel",
  "_diffusers_version": "0.0.4",
  "act_fn": "silu",
  "attention_head_dim": null,
  "block_out_channels": [128, 256, 256, 256],
  "center_input_sample": false,
  "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
  "downsample_padding": 0,
  "flip_sin_to_cos": false,
  "freq_shift": 1,
  "in_channels": 3,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-06,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 32,
  "time_embedding_type": "positional",
  "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
}""")


def plain(value):
    return list(value) if isinstance(value, tuple) else value


def test_ddpm_cifar10_preset_is_the_google_checkpoint():
    """Same config keys and values as google/ddpm-cifar10-32, and the checkpoint's state dict loads strictly."""
    from diffusers import UNet2DModel

    ours = make_unet("ddpm-cifar10", 32)
    public = {k: v for k, v in GOOGLE_DDPM_CIFAR10_32.items() if not k.startswith("_")}
    assert {k: plain(ours.config[k]) for k in public} == public
    assert ours.config.dropout == 0.1                                    # the training dropout (not in the file)
    torch.manual_seed(0)
    checkpoint = UNet2DModel(**public).state_dict()
    assert ours.load_state_dict(checkpoint, strict=True)                 # raises on any missing / unexpected / misshapen key
    assert n_params(ours) == 35_746_307                                  # 35.7M
    with torch.no_grad():                                                # the bottleneck at 32x32 is 256 x 4 x 4
        h = anchor_features(ours.eval(), torch.zeros(1, 3, 32, 32), torch.tensor(500))
    assert h.shape == (1, 256, 4, 4)


@pytest.mark.parametrize("name", sorted(set(PRESETS) - {"mini"}))
def test_every_preset_has_attention_at_the_same_levels_of_both_paths(name):
    """As in DDPM and the release: attention at level i of the down path and at level i of the up path,
    which diffusers lists deepest first. (`mini` keeps the order its shipped weights were trained with:
    test_shipped_model.py checks that it builds exactly that network.)"""
    p = PRESETS[name]
    down = [t.startswith("Attn") for t in p.down_block_types]
    up = [t.startswith("Attn") for t in p.up_block_types]
    assert up == down[::-1] and len(down) == len(p.block_out_channels)
    if name == "small":
        assert (p.down_block_types, p.up_block_types) == (PRESETS["ddpm-cifar10"].down_block_types,
                                                          PRESETS["ddpm-cifar10"].up_block_types)


def test_smaller_presets_and_resolutions():
    assert 8.5e6 < n_params(make_unet("small", 32)) < 9.5e6
    assert n_params(make_unet("tiny", 16)) < 2e6
    assert make_unet("ddpm-cifar10", 64, dropout=0.0).config.sample_size == 64   # STL-10 at 64 px
    with pytest.raises(UserError, match="multiple of 8"):
        make_unet("ddpm-cifar10", 36)
    with pytest.raises(UserError, match="unknown UNet preset"):
        make_unet("huge", 32)


def test_save_load_round_trip(tmp_path, tiny_unet, schedule):
    model_dir = save_model(tmp_path / "m", tiny_unet, schedule)
    assert (model_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((model_dir / "model_index.json").read_text())["unet"] == ["diffusers", "UNet2DModel"]
    unet, scheduler_config = load_model(model_dir)
    assert scheduler_config["beta_end"] == 0.02 and scheduler_config["num_train_timesteps"] == 1000
    assert not unet.training
    for (name, a), (_, b) in zip(tiny_unet.state_dict().items(), unet.state_dict().items()):
        assert torch.equal(a, b), name
    # Saving again replaces the directory whole: no temporary directories are left beside it.
    save_model(model_dir, unet, scheduler_config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize("safetensors", [True, False])
def test_a_directory_written_by_diffusers_itself_loads(tmp_path, tiny_unet, safetensors):
    from diffusers import DDPMPipeline, DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", variance_type="fixed_large")
    DDPMPipeline(unet=tiny_unet, scheduler=scheduler).save_pretrained(tmp_path / "hub", safe_serialization=safetensors)
    unet, scheduler_config = load_model(tmp_path / "hub")
    assert scheduler_config["_class_name"] == "DDPMScheduler"
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 700])
    with torch.no_grad():
        assert torch.equal(unet(x, t).sample, tiny_unet(x, t).sample)


def write_flat_folder(path, unet):
    """A folder as google/ddpm-cifar10-32 is published: diffusers' own save_pretrained of the UNet and of
    the DDPMScheduler, side by side at the top (no unet/ or scheduler/ subfolder, no model_index.json)."""
    from diffusers import DDPMScheduler

    unet.save_pretrained(path, safe_serialization=True)
    DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                  variance_type="fixed_large", clip_sample=True).save_pretrained(path)
    return path


def test_a_flat_folder_as_published_works_for_sample_and_synthesize(tmp_path, tiny_unet, schedule, capsys):
    import numpy as np
    from diffusers import DDPMScheduler, UNet2DModel

    from clsp.cli import main
    from clsp.diffusion.sampler import SamplerConfig, sample
    from clsp.positives import PositivesStore

    flat = write_flat_folder(tmp_path / "ddpm-flat", tiny_unet)
    assert sorted(p.name for p in flat.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors",
                                                      "scheduler_config.json"]
    UNet2DModel.from_pretrained(flat), DDPMScheduler.from_pretrained(flat)   # diffusers' own loaders take it
    unet, scheduler_config = load_model(flat)
    assert scheduler_config["num_train_timesteps"] == 1000 and scheduler_config["variance_type"] == "fixed_large"
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 700])
    with torch.no_grad():
        assert torch.equal(unet(x, t).sample, tiny_unet(x, t).sample)

    # `clsp diffusion sample --model FLAT` gives the samples of the UNet it holds
    assert main(["diffusion", "sample", "--model", str(flat), "--out", str(tmp_path / "s"), "--n", "3", "--steps", "2",
                 "--device", "cpu"]) == 0
    expected = sample(tiny_unet, schedule, 3, SamplerConfig(steps=2), seed=0)
    assert np.array_equal(np.load(tmp_path / "s" / "samples.npy")[:, 0], expected.numpy())
    # `clsp synthesize --model FLAT` makes a store (clsp fid and the pipeline's model_dir= load through the same load_model)
    assert main(["synthesize", "--model", str(flat), "--dataset", "digits", "--subset", "4", "--k", "2", "--steps", "2",
                 "--chunk-size", "4", "--out", str(tmp_path / "store"), "--device", "cpu"]) == 0
    assert PositivesStore.open(tmp_path / "store").candidates(torch.arange(4)).shape == (4, 2, 8, 8, 1)
    # what it cannot use is one line: a model of another size than the data
    capsys.readouterr()
    assert main(["diffusion", "sample", "--model", str(flat), "--out", str(tmp_path / "x"), "--anchors", "digits",
                 "--size", "16", "--steps", "2"]) == 2
    assert "makes 8x8 images but the data is 16x16" in capsys.readouterr().err


def test_a_class_table_unet_loads_and_other_class_conditioning_is_refused_with_one_message(tmp_path):
    """A class table (num_class_embeds, what `conditional=true` trains) loads; a UNet conditioned otherwise
    (class_embed_type) cannot be sampled and is refused. (Before issue 17 every class-conditional UNet was.)"""
    from diffusers import UNet2DModel

    layout = dict(sample_size=8, block_out_channels=(32, 64), down_block_types=("DownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=16, layers_per_block=1)
    write_flat_folder(tmp_path / "table", UNet2DModel(**layout, num_class_embeds=11))
    unet, _ = load_model(tmp_path / "table")
    assert unet.class_embedding.num_embeddings == 11
    write_flat_folder(tmp_path / "timestep", UNet2DModel(**layout, class_embed_type="timestep"))
    with pytest.raises(UserError, match="conditioned by class_embed_type=timestep"):
        load_model(tmp_path / "timestep")


def test_bad_directories_are_user_errors_naming_the_path(tmp_path, saved_tiny_model):
    with pytest.raises(UserError, match=str(tmp_path / "missing")):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither unet/config.json nor config.json"):
        load_model(tmp_path / "empty")
    (saved_tiny_model / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(UserError, match="scheduler"):
        load_model(saved_tiny_model)


def test_check_model_matches(tiny_unet):
    check_model_matches(tiny_unet, 8, channels=1)
    with pytest.raises(UserError, match=r"8x8 images but the data is 32x32.*\(dataset.size / --size 8\)"):
        check_model_matches(tiny_unet, 32, channels=1)
    with pytest.raises(UserError, match=r"\(anchors.size / --size 8\)"):  # the key the calling command has
        check_model_matches(tiny_unet, 32, channels=1, size_key="anchors.size / --size")
    with pytest.raises(UserError, match="1 input / 1 output channels but the data has 3"):
        check_model_matches(tiny_unet, 8, channels=3)
