"""The methods as the release and solo-learn run them: which forward each view takes (a BatchNorm spy),
All4One's total loss against a direct transcription of solo-learn's equations, NNCLR's recipe."""

from __future__ import annotations

import math

import kornia.augmentation as K
import lightning as L
import pytest
import torch
import torch.nn.functional as F
from methods_helpers import tiny_config

from clsp.config import CONFIG_DIR, load_config
from clsp.methods import METHODS, method_class
from clsp.methods.data import ViewMaker
from clsp.methods.pretrain import PretrainConfig, pretrain
from clsp.training import ResidentBatches

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


class BatchNormSpy(L.Callback):
    """The batch size every BatchNorm layer computes its statistics over in training mode, per submodule:
    read at F.batch_norm, so a layer that normalises views of one forward apart counts each view."""

    def __init__(self) -> None:
        self.sizes: dict[str, set[int]] = {}
        self._owner: dict[int, str] = {}
        self._batch_norm = F.batch_norm

    def on_train_start(self, trainer, module) -> None:
        for name, child in module.named_children():
            for layer in child.modules():
                if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                    self._owner[id(layer.weight)] = name
        torch.nn.functional.batch_norm = self._record

    def on_train_end(self, trainer, module) -> None:
        torch.nn.functional.batch_norm = self._batch_norm

    def on_exception(self, trainer, module, exception) -> None:
        torch.nn.functional.batch_norm = self._batch_norm

    def _record(self, x, running_mean, running_var, weight=None, bias=None, training=False, *args, **kwargs):
        if training and id(weight) in self._owner:
            self.sizes.setdefault(self._owner[id(weight)], set()).add(x.shape[0])
        return self._batch_norm(x, running_mean, running_var, weight, bias, training, *args, **kwargs)


def torch_kind(layer: torch.nn.Module) -> str:
    """The torch.nn class a layer is (BatchNorm1d for clsp's per-view BatchNorm1d)."""
    return next(c.__name__ for c in type(layer).__mro__ if c.__module__.startswith("torch.nn"))


@pytest.mark.parametrize("method", METHODS)
def test_batchnorm_statistics_are_per_view_except_for_simclr_and_supcon(tmp_path, digits_store, method):
    """The release's MoCo and solo-learn's methods normalise each view with its own statistics, so the
    synthetic view never shifts the real views'; the release's SimCLR forwards the three views together."""
    spy = BatchNormSpy()
    cfg = tiny_config(tmp_path / "run", f"method={method}", "dataset.subset=16", "batch_size=8", "epochs=1",
                      "knn.every_n_epochs=0", "projector.layers=3", "projector.batchnorm=true",
                      "clsp.weight=1.0", f"clsp.positives={digits_store(16)}")
    pretrain(cfg, callbacks=[spy])
    expected = {"simclr": {"backbone": {24}, "projector": {24}}, "supcon": {"backbone": {24}, "projector": {24}},
                "moco": {"backbone": {8}, "projector": {8}, "key_backbone": {8}, "key_projector": {8}},
                "nnclr": {"backbone": {8}, "projector": {8}, "predictor": {8}},
                "all4one": {"backbone": {8}, "projector": {8}, "predictor": {8}, "centroid_predictor": {8},
                            "momentum_backbone": {8}, "momentum_projector": {8}},
                "byol": {"backbone": {8}, "projector": {8}, "predictor": {8}, "momentum_backbone": {8},
                         "momentum_projector": {8}}}[method]
    assert spy.sizes == expected


# -- All4One against solo-learn's equations ---------------------------------------------------------

def solo_learn_positional_encoding(x: torch.Tensor) -> torch.Tensor:
    """Summer(PositionalEncodingPermute1D(k)) on x (B, k, d), transcribed: the tensor is read as (B, d, k),
    i.e. d positions of k channels, encoded along the d positions, and permuted back."""
    batch, k, d = x.shape
    channels = int(math.ceil(k / 2) * 2)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, channels, 2).float() / channels))
    sin_inp = torch.einsum("i,j->ij", torch.arange(d).float(), inv_freq)               # (d, channels / 2)
    emb = torch.flatten(torch.stack((sin_inp.sin(), sin_inp.cos()), dim=-1), -2, -1)    # (d, channels)
    return x + emb[None, :, :k].repeat(batch, 1, 1).permute(0, 2, 1)


def solo_learn_nnclr(nn: torch.Tensor, p: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    nn, p = F.normalize(nn, dim=-1), F.normalize(p, dim=-1)
    logits = nn @ p.T / temperature
    return F.cross_entropy(logits, torch.arange(len(nn)))


def off_diagonal(x: torch.Tensor) -> torch.Tensor:
    n, _ = x.shape
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def solo_learn_all4one_loss(module, x1: torch.Tensor, x2: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
    """solo-learn's All4One.training_step (the SSL part), written out with the module's own layers."""
    momentum_z1 = F.normalize(module.momentum_projector(module.momentum_backbone(x1)), dim=-1)
    momentum_z2 = F.normalize(module.momentum_projector(module.momentum_backbone(x2)), dim=-1)
    z1, z2 = module.projector(module.backbone(x1)), module.projector(module.backbone(x2))
    p1, p2 = module.predictor(z1), module.predictor(z2)
    p1_2, p2_2 = module.centroid_predictor(z1), module.centroid_predictor(z2)
    nn1 = queue[(momentum_z1 @ queue.T).topk(5, dim=1)[1]]
    nn2 = queue[(momentum_z2 @ queue.T).topk(5, dim=1)[1]]
    trans_emb1, trans_emb2 = solo_learn_positional_encoding(nn1), solo_learn_positional_encoding(nn2)
    strange1 = solo_learn_positional_encoding(torch.cat((p1_2.unsqueeze(1), nn1), 1)[:, :5, :])
    strange2 = solo_learn_positional_encoding(torch.cat((p2_2.unsqueeze(1), nn2), 1)[:, :5, :])
    corr_1 = F.normalize(momentum_z1, dim=0).T @ F.normalize(z2, dim=0)
    corr_2 = F.normalize(momentum_z2, dim=0).T @ F.normalize(z1, dim=0)
    on_diag = ((torch.diagonal(corr_1).add(-1).pow(2).mean() + torch.diagonal(corr_2).add(-1).pow(2).mean()) * 0.5).sqrt()
    off_diag = ((off_diagonal(corr_1).pow(2).mean() + off_diagonal(corr_2).pow(2).mean()) * 0.5).sqrt()
    transformer = module.transformer
    rich1, rich2 = transformer(trans_emb1)[:, 0, :], transformer(trans_emb2)[:, 0, :]
    strange_emb1, strange_emb2 = transformer(strange1)[:, 0, :], transformer(strange2)[:, 0, :]
    att_nnclr = solo_learn_nnclr(rich1, strange_emb2) / 2 + solo_learn_nnclr(rich2, strange_emb1) / 2
    nnclr = solo_learn_nnclr(nn1[:, 0, :], p2, 0.2) / 2 + solo_learn_nnclr(nn2[:, 0, :], p1, 0.2) / 2
    feature = (0.5 * on_diag + 0.5 * off_diag) * 10
    return 0.5 * att_nnclr + 0.5 * nnclr + 0.5 * feature


def all4one_module(tmp_path):
    cfg = tiny_config(tmp_path, "method=all4one", "projector.hidden_dim=64", "projector.out_dim=32", "projector.layers=3",
                      "projector.batchnorm=true", "all4one.dropout=0.0", "all4one.support_size=64", "batch_size=16")
    data = ResidentBatches(torch.zeros(32, 8, 8, 3, dtype=torch.uint8), None, 16, 0)
    torch.manual_seed(0)
    return method_class("all4one")(cfg, data, ViewMaker(torch.nn.Identity(), None), steps_per_epoch=2)


def test_all4one_total_loss_equals_solo_learns_equations(tmp_path):
    module = all4one_module(tmp_path)
    torch.manual_seed(1)
    x1, x2 = torch.randn(16, 3, 8, 8), torch.randn(16, 3, 8, 8)
    with torch.no_grad():                         # a support set with structure: near copies of the batch's projections
        m = F.normalize(module.projector(module.backbone(torch.cat([x1, x2]))), dim=1).repeat(2, 1)   # 64 rows
        module.support.copy_(F.normalize(m + 0.3 * torch.randn_like(m), dim=1))
    queue = module.support.clone()
    torch.manual_seed(2)
    theirs = solo_learn_all4one_loss(module, x1, x2, queue)
    torch.manual_seed(2)
    module.before_step(0)
    _, z = module.encode([x1, x2])
    ours, _, _ = module.ssl_loss([x1, x2], z)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_all4one_positions_are_solo_learns_along_the_feature_axis():
    from clsp.methods.all4one import feature_axis_positions

    table = feature_axis_positions(5, 256)
    torch.testing.assert_close(table[None], solo_learn_positional_encoding(torch.zeros(1, 5, 256)), rtol=0, atol=1e-6)
    i = torch.arange(256.0)
    torch.testing.assert_close(table[0], torch.sin(i))                          # token 0: sin of the feature index
    torch.testing.assert_close(table[3], torch.cos(i * 10000 ** (-2 / 6)))       # token 3: cos at the second frequency


# -- NNCLR's recipe ---------------------------------------------------------------------------------

def test_nnclr_preset_is_solo_learns_recipe(tmp_path):
    cfg = load_config(PretrainConfig, CONFIG_DIR / "pretrain" / "cifar10-nnclr.yaml")
    assert (cfg.optimizer, cfg.lr, cfg.lars_eta, cfg.lars_clip_lr, cfg.weight_decay, cfg.batch_size) == \
        ("lars", 0.4, 0.02, True, 1e-5, 256)
    assert (cfg.nnclr.support_size, cfg.nnclr.predictor_hidden_dim, cfg.temperature, cfg.epochs) == (65536, 4096, 0.2, 1000)
    assert cfg.augment == "asymmetric"
    data = ResidentBatches(torch.zeros(512, 32, 32, 3, dtype=torch.uint8), None, 256, 0)
    module = method_class("nnclr")(cfg, data, ViewMaker(torch.nn.Identity(), None), steps_per_epoch=2)
    kinds = [torch_kind(layer) for layer in module.projector]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert [layer.out_features for layer in module.projector if isinstance(layer, torch.nn.Linear)] == [2048, 2048, 256]
    assert module.predictor[0].out_features == 4096 and module.predictor[-1].out_features == 256

    from clsp.data.augment import make_view_augments

    first, second = make_view_augments(cfg.augment, 32, (0.5,) * 3, (0.5,) * 3)
    ops1, ops2 = ({type(op): op for op in a.ops} for a in (first, second))
    assert set(ops2) - set(ops1) == {K.RandomSolarize} and ops2[K.RandomSolarize].p == 0.2
    for ops in (ops1, ops2):
        jitter = ops[K.ColorJitter]
        assert (jitter.p, jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == (0.8, 0.4, 0.4, 0.2, 0.1)
        assert ops[K.RandomGrayscale].p == 0.2 and ops[K.RandomHorizontalFlip].p == 0.5


def test_byol_preset_builds_solo_learns_heads(tmp_path):
    """solo-learn's BYOL: projector and predictor Linear-BN-ReLU-Linear, no BN on the output; LARS lr 1.0."""
    cfg = load_config(PretrainConfig, CONFIG_DIR / "pretrain" / "cifar10-byol.yaml")
    assert (cfg.method, cfg.optimizer, cfg.lr, cfg.lars_eta, cfg.lars_clip_lr, cfg.weight_decay, cfg.batch_size) == \
        ("byol", "lars", 1.0, 0.02, True, 1e-5, 256)
    assert cfg.augment == "asymmetric"
    data = ResidentBatches(torch.zeros(512, 32, 32, 3, dtype=torch.uint8), None, 256, 0)
    module = method_class("byol")(cfg, data, ViewMaker(torch.nn.Identity(), None), steps_per_epoch=2)
    for head, widths in ((module.projector, [(512, 4096), (4096, 256)]), (module.momentum_projector, [(512, 4096), (4096, 256)]),
                         (module.predictor, [(256, 4096), (4096, 256)])):
        assert [torch_kind(layer) for layer in head] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
        assert [(layer.in_features, layer.out_features) for layer in head if isinstance(layer, torch.nn.Linear)] == widths
    assert module.momentum_range() == (0.99, 1.0)


def test_asymmetric_views_solarise_the_second_view_only(tmp_path, digits_store):
    """A view that was solarised has no pixel above 0.5 (before normalisation) where the original was
    bright: count such views among many, per view position."""
    from clsp.data.augment import make_view_augments

    first, second = make_view_augments("asymmetric", 8, (0.0,) * 3, (1.0,) * 3)
    views = ViewMaker(first, "augment", second_augment=second)
    white = torch.full((400, 8, 8, 3), 250, dtype=torch.uint8)                  # bright: solarised -> dark
    torch.manual_seed(0)
    v1, v2, v3 = views(white, torch.arange(400), 0, 0)
    dark = [float((v.amax(dim=(1, 2, 3)) < 0.5).float().mean()) for v in (v1, v2, v3)]
    assert dark[0] == 0.0 and dark[2] == 0.0 and 0.12 < dark[1] < 0.28         # p = 0.2 on the second view only


# -- views cropped from larger images (STL-10: 64 px views from the 96 px originals) -------------------

class InputSpy(L.Callback):
    def __init__(self) -> None:
        self.source_shape, self.view_shapes = None, set()

    def on_train_start(self, trainer, module) -> None:
        self.source_shape = tuple(module.data.images.shape[1:])
        module.backbone.register_forward_pre_hook(lambda m, args: self.view_shapes.add(tuple(args[0].shape[1:])) if m.training else None)


def test_views_are_cropped_from_the_images_at_crop_source_size(tmp_path, digits_store):
    """Digits at 8 px with views cropped from the 16 px images; the store (8 px), the encoder and its
    recorded image size stay at the dataset's 8 px."""
    import json

    from clsp.models.encoder import read_meta

    spy = InputSpy()
    cfg = tiny_config(tmp_path / "run", "method=simclr", "dataset.subset=16", "batch_size=8", "crop_source_size=16",
                      "knn.every_n_epochs=1", "clsp.weight=1.0", f"clsp.positives={digits_store(16)}")
    out = pretrain(cfg, callbacks=[spy])
    assert spy.source_shape == (16, 16, 1) and spy.view_shapes == {(3, 8, 8)}
    assert read_meta(out)["image_size"] == 8
    assert set(json.loads((out / "inputs.json").read_text())) == {"dataset", "crop_source", "positives"}
