"""The contract with pretraining: an encoder written by `clsp.methods.pretrain` loads and evaluates."""

import pytest

from clsp.data.config import DatasetConfig

TINY_PRETRAIN = [
    "dataset.name=digits", "dataset.subset=96", "method=simclr", "batch_size=32", "epochs=1", "warmup_epochs=0",
    "lr=0.05", "backbone.arch=resnet10", "projector.hidden_dim=32", "projector.out_dim=16", "knn.every_n_epochs=0",
    "trainer.accelerator=cpu", "trainer.progress=false",
]


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    from clsp.config import load_config
    from clsp.methods.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("pretrain") / "simclr"
    return pretrain(load_config(PretrainConfig, None, [*TINY_PRETRAIN, f"out_dir={out}"]))


def test_pretrained_run_dir_evaluates(pretrained_run, tmp_path):
    from clsp.eval.knn import knn_eval
    from clsp.eval.linear import LinearProbeConfig, linear_eval

    data = DatasetConfig(name="digits", subset=96)
    knn = knn_eval(pretrained_run, data, tmp_path / "knn", device="cpu")
    assert knn["encoder"]["method"] == "simclr" and knn["encoder"]["arch"] == "resnet10"
    # 96 training images: k = 100 and 200 would both be every image, reported as k = 96
    assert set(knn["results"]["accuracy"]) == {"5", "10", "20", "50", "96"} and knn["results"]["fixed_k"] == 96
    assert knn["results"]["best"] == max(knn["results"]["accuracy"].values())
    assert knn["results"]["fixed"] == knn["results"]["accuracy"]["96"]
    linear = linear_eval(pretrained_run, data, tmp_path / "linear", LinearProbeConfig(epochs=3, milestones=[2]),
                         device="cpu", progress=False)
    assert linear["encoder"]["sha256"] == knn["encoder"]["sha256"]
    assert 0 <= linear["results"]["top1"] <= linear["results"]["top5"] <= 100


def test_a_narrow_resnet_trains_saves_and_loads_with_its_width(tmp_path):
    """backbone.width scales every stage (64 -> 32: a quarter of the convolutions); the encoder file carries the
    width, and the rebuilt backbone gives the trained one's features."""
    import torch

    from clsp.config import load_config
    from clsp.methods.pretrain import PretrainConfig, pretrain
    from clsp.models.backbones import make_backbone
    from clsp.models.encoder import load_encoder

    standard, dim = make_backbone("resnet18", "cifar")
    assert dim == 512 and sum(p.numel() for p in standard.parameters()) == 11_168_832   # torchvision's, unchanged
    narrow, dim = make_backbone("resnet18", "cifar", width=32)
    assert dim == 256 and [narrow.layer1[0].conv1.out_channels, narrow.layer4[0].conv1.out_channels] == [32, 256]
    out = pretrain(load_config(PretrainConfig, None, [*TINY_PRETRAIN, "backbone.width=32", f"out_dir={tmp_path / 'run'}"]))
    backbone, meta = load_encoder(out)
    assert meta["width"] == 32 and meta["feat_dim"] == 256
    x = torch.randn(2, 3, 8, 8)
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    trained, _ = make_backbone("resnet10", "cifar", width=32)
    trained.load_state_dict({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")})
    with torch.no_grad():
        assert torch.equal(backbone(x), trained.eval()(x))
