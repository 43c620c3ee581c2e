"""timm backbones (`backbone.arch=timm:NAME`): a ViT-S/16 pretrains through `clsp pretrain` on 16 px digits and
its encoder file rebuilds it exactly; timm's ResNet takes the CIFAR stem; bad names and a missing timm exit 2."""

from __future__ import annotations

import json
import math
import re
import sys

import pytest
import torch

from clsp.cli import main
from clsp.models.backbones import make_backbone
from clsp.models.encoder import load_encoder

timm = pytest.importorskip("timm")

VIT = "timm:vit_small_patch16_224"
MICRO = ["--device", "cpu", "dataset.name=digits", "dataset.subset=16", "batch_size=8", "epochs=1", "warmup_epochs=0",
         "projector.hidden_dim=32", "projector.out_dim=16", "knn.every_n_epochs=1", "knn.k=5", "knn.batch_size=64",
         "trainer.progress=false", "trainer.log_every=1"]


def test_vit_s16_pretrains_through_the_cli_and_its_encoder_file_rebuilds_it_exactly(tmp_path):
    out = tmp_path / "vit"
    assert main(["pretrain", "--out", str(out), *MICRO, "dataset.size=16", f"backbone.arch={VIT}",
                 "optimizer=adamw", "lr=1.0e-3", "weight_decay=0.1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and math.isfinite(metrics["ssl_loss_final"])

    backbone, meta = load_encoder(out)
    assert (meta["arch"], meta["image_size"], meta["feat_dim"], meta["timm_version"]) == (VIT, 16, 384, timm.__version__)
    assert type(backbone).__module__ == "timm.models.vision_transformer"
    # The encoder holds the trained backbone of the run's final checkpoint, and the rebuilt one computes as it does.
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    trained = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    torch.manual_seed(1)
    fresh, _ = make_backbone(VIT, "cifar", 64, 16)
    assert not torch.equal(fresh.state_dict()["blocks.0.attn.qkv.weight"], trained["blocks.0.attn.qkv.weight"])
    fresh.load_state_dict(trained)
    images = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(backbone(images), fresh.eval()(images))


def test_timm_resnet18_builds_with_timms_layers_and_the_cifar_stem():
    net, dim = make_backbone("timm:resnet18", "cifar", 64, 32)
    assert dim == 512 == net.num_features and type(net).__module__ == "timm.models.resnet"
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and isinstance(net.maxpool, torch.nn.Identity)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 512)
    imagenet, _ = make_backbone("timm:resnet18", "imagenet", 64, 224)
    assert imagenet.conv1.kernel_size == (7, 7) and isinstance(imagenet.maxpool, torch.nn.MaxPool2d)  # timm's own stem


@pytest.mark.parametrize("overrides, message", [
    (["backbone.arch=timm:vit_smal_patch16_224"], "unknown timm model 'vit_smal_patch16_224' .*did you mean "
                                                   "timm:vit_small_patch16_224"),
    ([f"backbone.arch={VIT}"], "cuts images into 16 px patches and these are 8 px"),        # digits' native 8 px
    (["backbone.arch=timm:efficientnet_b0", "backbone.stem=cifar"], "has none; use backbone.stem=imagenet"),
])
def test_a_backbone_timm_cannot_build_exits_2_in_one_line_before_anything_is_written(tmp_path, capsys, overrides,
                                                                                        message):
    assert main(["pretrain", "--out", str(tmp_path / "run"), *MICRO, *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_without_timm_a_timm_backbone_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)        # `import timm` raises ImportError, as when not installed
    assert main(["pretrain", "--out", str(tmp_path / "run"), *MICRO, "backbone.arch=timm:resnet18"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'clsp[timm]'" in err, err
