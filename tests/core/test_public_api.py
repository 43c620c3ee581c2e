"""The library a notebook user gets from `import clsp` (issue 28): positives from the shipped diffusion model in
torchvision's conventions, a store that is a map-style dataset over any dataset of its order (and refuses one of
another order), the CLSP term as the loss training adds, and the two loaders. Real Fashion-MNIST images."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import clsp
from clsp.errors import UserError

MODEL = "clsp:fashion-mnist-16"


@pytest.fixture(scope="module")
def fashion16():
    """The first 12 Fashion-MNIST test images at 16 px (the shipped model's size), uint8 (N, H, W, 1)."""
    try:
        ds = clsp.load_dataset("fashion-mnist", "test", size=16, download=False)
    except UserError as e:
        pytest.skip(f"Fashion-MNIST unavailable: {e}")
    return ds.images[:12], ds.labels[:12]


def chw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


class ListDataset(torch.utils.data.Dataset):
    """A plain map-style dataset of (image, label), as torchvision's give them, with an optional transform."""

    def __init__(self, images: torch.Tensor, labels, transform=None) -> None:
        self.images, self.labels, self.transform = images, [int(y) for y in labels], transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = self.images[i].float() / 255
        return (self.transform(image) if self.transform else image), self.labels[i]


def test_import_clsp_loads_no_torch_and_lists_the_api():
    code = "import sys, clsp; print('torch' in sys.modules, sorted(clsp.__all__), 'CLSPTerm' in dir(clsp))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(None, 1)
    assert out[0] == "False"
    assert out[1].strip() == str(sorted(["CLSPTerm", "PositivesStore", "UserError", "__version__", "generate_positives",
                                         "load_dataset", "load_encoder"])) + " True"
    assert set(clsp.__all__) == {*clsp._PUBLIC, "__version__"}
    with pytest.raises(AttributeError):
        clsp.no_such_name


def test_generate_positives_keeps_the_images_conventions_and_the_models_recommended_settings(fashion16):
    images, _ = fashion16
    anchors = chw(images[:4])
    as_float = clsp.generate_positives(MODEL, anchors.float() / 255, k=2, steps=5, seed=1, device="cpu")
    assert as_float.shape == (4, 2, 1, 16, 16) and as_float.dtype == torch.float32
    # The shipped model's record recommends w = 0.1, layers = 4: they are the defaults, and they matter.
    as_uint8 = clsp.generate_positives(MODEL, anchors, k=2, steps=5, seed=1, device="cpu", w=0.1, layers=4)
    assert as_uint8.shape == (4, 2, 1, 16, 16) and as_uint8.dtype == torch.uint8
    assert torch.equal((as_float * 255).round().to(torch.uint8), as_uint8)
    paper = clsp.generate_positives(MODEL, anchors, k=2, steps=5, seed=1, device="cpu", layers=1)
    assert not torch.equal(paper, as_uint8)
    # The candidates are nearer their own anchor than the other anchors (the interpolation's point).
    distance = (as_float.mean(1)[:, None] - (anchors.float() / 255)[None]).flatten(2).norm(dim=2)   # (candidate, anchor)
    own = distance.diagonal().mean()
    assert own < (distance.sum() - distance.diagonal().sum()) / 12 * 0.8, distance


def test_generate_positives_takes_a_bare_unet():
    from clsp.diffusion.model import load_model

    unet, schedule = load_model(MODEL)
    anchors = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    from_unet = clsp.generate_positives(unet, anchors, k=1, steps=3, device="cpu", scheduler_config=schedule, w=0.1)
    from_dir = clsp.generate_positives(MODEL, anchors, k=1, steps=3, device="cpu", layers=1)
    assert torch.equal(from_unet, from_dir)


@pytest.mark.parametrize("images, message", [
    (torch.rand(4, 16, 16), "must be (N, C, H, W)"),
    (torch.rand(2, 16, 16, 1), "must be (N, C, H, W)"),
    (torch.rand(2, 3, 16, 16), "1-channel images but the images have 3"),
    (torch.rand(2, 1, 28, 28), "makes 16x16 images but the images are 28x28"),
    (torch.randn(2, 1, 16, 16), "must be in [0, 1]"),
    (torch.zeros(2, 1, 16, 16, dtype=torch.int64), "uint8 in [0, 255] or float"),
])
def test_generate_positives_refuses_images_it_cannot_use_in_one_line(images, message):
    with pytest.raises(UserError) as e:
        clsp.generate_positives(MODEL, images, k=2, steps=2, device="cpu")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_generate_positives_refuses_unknown_settings():
    with pytest.raises(UserError, match="unknown sampler setting temperature"):
        clsp.generate_positives(MODEL, torch.zeros(1, 1, 16, 16), k=1, temperature=2.0)
    with pytest.raises(UserError, match="'w'"):
        clsp.generate_positives(MODEL, torch.zeros(1, 1, 16, 16), k=1, w=1.5)


def test_a_saved_store_is_a_dataset_over_any_dataset_of_its_order(fashion16, tmp_path):
    images, labels = fashion16
    anchors = chw(images)
    candidates = torch.randint(0, 256, (12, 3, 1, 16, 16), dtype=torch.uint8)
    store = clsp.PositivesStore.save(tmp_path / "store", candidates, anchors, labels=labels, chunk_size=5)
    assert len(store) == 12 and store.k == 3
    with pytest.raises(UserError, match="records no dataset"):
        store[0]

    wrapped = clsp.PositivesStore.open(tmp_path / "store", ListDataset(anchors, labels))
    (image, label), positives = wrapped[7]
    assert torch.equal(image, anchors[7].float() / 255) and label == labels[7]
    assert torch.equal(positives, candidates[7])
    batch = next(iter(torch.utils.data.DataLoader(wrapped, batch_size=4, shuffle=True)))
    (images_b, labels_b), positives_b = batch
    assert positives_b.shape == (4, 3, 1, 16, 16) and images_b.shape == (4, 1, 16, 16)

    # One candidate through the views' transform, given as an RGB PIL image (as an ImageFolder's are).
    from torchvision.transforms import v2

    to_tensor = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])
    one = clsp.PositivesStore.open(tmp_path / "store", ListDataset(anchors, labels), positive_transform=to_tensor)
    _, positive = one[7]
    assert positive.shape == (3, 16, 16)
    assert any(torch.equal((positive[0] * 255).round().to(torch.uint8), c[0]) for c in candidates[7])

    # A random transform on the wrapped dataset's items is no mismatch.
    flips = clsp.PositivesStore.open(tmp_path / "store", ListDataset(anchors, labels, v2.RandomHorizontalFlip()))
    assert len(flips) == 12


def test_a_store_refuses_a_dataset_of_another_length_or_order(fashion16, tmp_path):
    images, labels = fashion16
    anchors = chw(images)
    clsp.PositivesStore.save(tmp_path / "store", torch.zeros(12, 2, 1, 16, 16, dtype=torch.uint8), anchors, labels)
    cases = {
        "holds the positives of 12 images but the dataset has 11": ListDataset(anchors[:11], labels[:11]),
        "made from other images, or from these in another order": ListDataset(anchors.flip(0), labels[::-1]),
    }
    unlabelled = torch.utils.data.TensorDataset(torch.cat([anchors[1:2], anchors[1:]]))   # item 0 replaced, no labels
    for message, dataset in [*cases.items(), ("item 0 has other pixels", [x[0] for x in unlabelled])]:
        with pytest.raises(UserError) as e:
            clsp.PositivesStore.open(tmp_path / "store", dataset)
        assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(UserError, match="already exists"):
        clsp.PositivesStore.save(tmp_path / "store", torch.zeros(12, 2, 1, 16, 16, dtype=torch.uint8), anchors, labels)


def test_a_synthesized_store_opens_alone_and_over_a_torch_dataset(fashion16, tmp_path):
    from clsp.data.config import DatasetConfig
    from clsp.diffusion.config import SamplerConfig
    from clsp.positives.config import SynthesizeConfig
    from clsp.positives.synthesize import synthesize

    cfg = SynthesizeConfig(model=MODEL, dataset=DatasetConfig(name="fashion-mnist", size=16, subset=6), split="test",
                           k=2, sampler=SamplerConfig(steps=2), out_dir=str(tmp_path / "store"), device="cpu",
                           progress=False)
    synthesize(cfg)
    store = clsp.PositivesStore.open(tmp_path / "store")
    image, candidates = store[5]
    recorded = store._recorded_dataset()
    assert torch.equal(image, chw(recorded.images[5:6])[0]) and candidates.shape == (2, 1, 16, 16)
    over = ListDataset(chw(recorded.images), recorded.labels)
    assert torch.equal(clsp.PositivesStore.open(tmp_path / "store", over)[5][1], candidates)
    with pytest.raises(UserError, match="another order"):
        clsp.PositivesStore.open(tmp_path / "store", ListDataset(chw(recorded.images[::-1].copy()), recorded.labels[::-1]))


def test_clsp_term_is_the_term_pretraining_adds(tmp_path):
    from clsp.config import load_config
    from clsp.methods.pretrain import PretrainConfig
    from clsp.methods.simclr import SimCLR

    cfg = load_config(PretrainConfig, None, ["dataset.name=digits", "backbone.arch=resnet10", "projector.hidden_dim=64",
                                             "projector.out_dim=32", "clsp.weight=0.7", f"out_dir={tmp_path}"])
    method = SimCLR(cfg, data=None, views=None, steps_per_epoch=10)
    torch.manual_seed(0)
    views = [torch.randn(8, 3, 8, 8) for _ in range(3)]
    loss, logs, _ = method.loss_from_views(views, None, torch.tensor(0.7))
    _, z = method.encode(views)
    term = clsp.CLSPTerm(weight=0.7)
    assert torch.allclose(term(z[0], z[2]), loss - logs["train/loss_ssl"], atol=1e-6)
    # its equation: lambda * mean_i |z1_i/|z1_i| - z3_i/|z3_i||^2
    by_hand = ((z[0] / z[0].norm(dim=1, keepdim=True) - z[2] / z[2].norm(dim=1, keepdim=True)) ** 2).sum(1).mean()
    assert torch.allclose(term(z[0], z[2]), 0.7 * by_hand, atol=1e-6)
    contrast = load_config(PretrainConfig, None, ["dataset.name=digits", "backbone.arch=resnet10", "projector.hidden_dim=64",
                                                  "projector.out_dim=32", "clsp.weight=0.7", "clsp.form=contrast",
                                                  f"out_dir={tmp_path}"])
    method.cfg = contrast
    loss, logs, _ = method.loss_from_views(views, None, torch.tensor(0.7))
    term = clsp.CLSPTerm(weight=0.7, form="contrast", temperature=contrast.temperature)
    assert torch.allclose(term(z[0], z[2]), loss - logs["train/loss_ssl"], atol=1e-6)
    with pytest.raises(ValueError, match="'cosine' or 'contrast'"):
        clsp.CLSPTerm(form="infonce")


def test_clsp_term_ramps_lambda_as_training_does():
    z1, z3 = torch.randn(6, 4), torch.randn(6, 4)
    full = clsp.CLSPTerm(2.0)(z1, z3)
    ramp = clsp.CLSPTerm(2.0, ramp_steps=4)
    assert [round(float(ramp(z1, z3, step) / full), 6) for step in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    with pytest.raises(ValueError, match="pass the step"):
        ramp(z1, z3)
    both = clsp.CLSPTerm(1.0)(z1, [z3, -z3])                         # P = 2 positives: the mean of the two terms
    assert torch.allclose(both, (clsp.CLSPTerm(1.0)(z1, z3) + clsp.CLSPTerm(1.0)(z1, -z3)) / 2)
    z3.requires_grad_(True)
    clsp.CLSPTerm(1.0, quality=True)(z1, [z3, -z3]).backward()
    assert z3.grad is not None and torch.isfinite(z3.grad).all()


def test_load_dataset_returns_the_image_set_the_readme_describes(fashion16):
    ds = clsp.load_dataset("digits", "train")
    assert ds.images.dtype == np.uint8 and ds.images.ndim == 4 and ds.images.shape[-1] == 1
    assert ds.labels.dtype == np.int64 and len(ds.labels) == len(ds) and len(ds.classes) == 10
    assert isinstance(ds.fingerprint, str) and len(ds.mean) == len(ds.std) == 3


def test_load_encoder_returns_the_backbone_and_its_meta(tmp_path):
    from clsp.models.backbones import make_backbone
    from clsp.models.encoder import save_encoder

    backbone, feat_dim = make_backbone("resnet10", "cifar")
    meta = {"arch": "resnet10", "stem": "cifar", "feat_dim": feat_dim, "image_size": 16, "mean": [0.5] * 3,
            "std": [0.5] * 3, "dataset": "fashion-mnist", "method": "simclr", "clsp_lambda": 1.0}
    save_encoder(tmp_path / "encoder.safetensors", backbone, meta)
    loaded, read = clsp.load_encoder(tmp_path)
    assert read["feat_dim"] == feat_dim and not loaded.training
    assert loaded(torch.zeros(2, 3, 16, 16)).shape == (2, feat_dim)
