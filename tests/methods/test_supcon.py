"""SupCon as a pretraining method: the labels reach its loss, a CLSP-SupCon step trains, data without
labels is refused before anything starts (by `clsp pretrain` and by the pipeline)."""

from __future__ import annotations

import pytest
import torch
from methods_helpers import tiny_config
from PIL import Image

from clsp.errors import UserError
from clsp.methods import method_class
from clsp.methods.data import ViewMaker
from clsp.methods.losses import clsp_term, supcon
from clsp.methods.pretrain import pretrain
from clsp.training import ResidentBatches

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def test_a_clsp_supcon_step_uses_the_labels_and_trains(tmp_path):
    cfg = tiny_config(tmp_path, "method=supcon", "clsp.weight=1.0", "clsp.third_view=augment", "batch_size=8")
    data = ResidentBatches(torch.zeros(16, 8, 8, 3, dtype=torch.uint8), torch.zeros(16, dtype=torch.long), 8, 0)
    torch.manual_seed(0)
    module = method_class("supcon")(cfg, data, ViewMaker(torch.nn.Identity(), "augment"), steps_per_epoch=2, num_classes=10)
    views = [torch.randn(8, 3, 8, 8) for _ in range(3)]
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3, 3])

    loss, logs, entries = module.loss_from_views(views, labels)
    loss.backward()
    assert torch.isfinite(loss) and entries is None
    with torch.no_grad():                            # the step's one forward of the 3 views, BatchNorm in training mode
        z = module.projector(module.backbone(torch.cat(views))).chunk(3)
    torch.testing.assert_close(logs["train/loss_ssl"], supcon(z[:2], labels, 0.2))     # the real views, these labels
    torch.testing.assert_close(logs["train/loss_clsp"], clsp_term(z[0], z[2]))
    grads = {name: p.grad for name, p in module.named_parameters() if p.grad is not None}
    assert any(n.startswith("backbone.") for n in grads) and any(n.startswith("projector.") for n in grads)
    assert all(torch.isfinite(g).all() for g in grads.values()) and sum(g.abs().sum() for g in grads.values()) > 0
    other, other_logs, _ = module.loss_from_views(views, torch.arange(8))          # all distinct: NT-Xent
    assert abs(other_logs["train/loss_ssl"].item() - logs["train/loss_ssl"].item()) > 1e-3


def test_supcon_refuses_a_training_split_without_labels(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(16):
        Image.fromarray(torch.randint(0, 256, (8, 8, 3), dtype=torch.uint8).numpy()).save(flat / f"{i:02d}.png")
    cfg = tiny_config(tmp_path / "run", "method=supcon", f"dataset.name=folder:{flat}", "knn.every_n_epochs=0")
    with pytest.raises(UserError, match=r"method supcon learns from the class labels, but folder:.* has none"):
        pretrain(cfg)
    assert not (tmp_path / "run" / "config.yaml").exists()
