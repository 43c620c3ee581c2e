"""The CLSP term's options: the oracle third view (a real class-mate), the lambda ramp, P positives per step,
quality weights; and the one-line refusals of what cannot run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from methods_helpers import read_log, tiny_config

from clsp.errors import UserError
from clsp.methods.base import clsp_weight_at
from clsp.methods.data import ClassMates, ViewMaker
from clsp.methods.losses import clsp_term, quality_weights
from clsp.methods.pretrain import pretrain
from clsp.training import ResidentBatches


def digits_batches(subset: int = 120) -> ResidentBatches:
    from clsp.data.config import DatasetConfig, load_split

    images, labels = load_split(DatasetConfig(name="digits", subset=subset), "train").tensors("cpu")
    return ResidentBatches(images, labels, 16, seed=0)


def test_oracle_draws_another_image_of_the_anchors_class():
    batches = digits_batches()
    mates = ClassMates(batches)
    anchors = torch.arange(len(batches.labels)).repeat(20)            # every image, 20 draws each
    drawn = mates.draw(anchors, torch.Generator().manual_seed(0))
    assert torch.equal(batches.labels[drawn], batches.labels[anchors])
    assert not (drawn == anchors).any()                                # every digit class has > 1 image here
    per_anchor = drawn.view(20, -1)
    assert (per_anchor != per_anchor[0]).any(0).float().mean() > 0.9   # random, not a fixed partner
    again = mates.draw(anchors, torch.Generator().manual_seed(0))
    assert torch.equal(drawn, again)


def test_oracle_returns_the_anchor_alone_in_its_class():
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 2, 2, 1).contiguous()
    labels = torch.tensor([0, 1, 0, 2, 0])                            # classes 1 and 2 have one image
    mates = ClassMates(ResidentBatches(images, labels, 1, seed=0))
    anchors = torch.tensor([1, 3, 0, 2, 4]).repeat(50)
    drawn = mates.draw(anchors, torch.Generator().manual_seed(1))
    alone = (anchors == 1) | (anchors == 3)
    assert torch.equal(drawn[alone], anchors[alone])
    assert torch.equal(labels[drawn], labels[anchors]) and not (drawn[~alone] == anchors[~alone]).any()
    assert set(drawn[anchors == 0].tolist()) == {2, 4}                 # both others drawn, uniformly enough
    assert torch.equal(mates(anchors[:3], torch.Generator().manual_seed(1))[:, 0, 0, 0], drawn[:3].to(torch.uint8))


def test_oracle_views_are_deterministic_by_step():
    batches = digits_batches()
    views = ViewMaker(torch.nn.Identity(), "oracle", class_mates=ClassMates(batches), seed=3)
    indices = torch.arange(16)
    images = batches.images[indices]
    first, again, other = views(images, indices, 7, 0), views(images, indices, 7, 0), views(images, indices, 8, 0)
    assert len(first) == 3 and torch.equal(first[0], images)
    assert torch.equal(first[2], again[2]) and not torch.equal(first[2], other[2])


def test_lambda_ramp_follows_the_hand_written_sequence():
    assert [clsp_weight_at(s, 1.0, 4) for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert [clsp_weight_at(s, 0.5, 0) for s in range(3)] == [0.5, 0.5, 0.5]


def test_ramp_is_logged_each_step(tmp_path):
    # 48 images, batch 16: 3 steps per epoch x 2 epochs; ramp over 1 epoch = 3 steps
    cfg = tiny_config(tmp_path / "run", "dataset.subset=48", "epochs=2", "knn.every_n_epochs=0", "clsp.weight=0.6",
                      "clsp.third_view=augment", "clsp.ramp_epochs=1")
    log = read_log(pretrain(cfg))
    assert log["train/clsp_weight"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.6, 0.6])


def test_clsp_term_with_several_positives_and_weights():
    z1, z3 = torch.randn(6, 4), [torch.randn(6, 4), torch.randn(6, 4)]
    q = torch.rand(2, 6)
    expected = sum((q[p] * (F.normalize(z1, dim=1) - F.normalize(z3[p], dim=1)).pow(2).sum(1)).sum() for p in range(2)) / 12
    assert clsp_term(z1, z3, q) == pytest.approx(float(expected), rel=1e-5)
    assert torch.equal(clsp_term(z1, [z3[0]]), (2 - 2 * F.cosine_similarity(z1, z3[0], dim=1)).mean())


def test_quality_weights_drop_opposed_pairs_and_average_one():
    q = quality_weights(torch.tensor([[0.9, 0.5, -0.2, 0.2]]))
    assert q.mean() == pytest.approx(1.0) and q[0, 2] == 0
    assert q[0, 0] / q[0, 1] == pytest.approx(0.9 / 0.5)


def test_several_candidates_per_step_are_distinct(digits_store):
    from clsp.data.config import DatasetConfig, load_split
    from clsp.positives.store import PositivesStore

    train = load_split(DatasetConfig(name="digits", subset=16), "train")
    store = PositivesStore.open(digits_store(16), train).to("cpu")      # K = 3
    views = ViewMaker(torch.nn.Identity(), "synthetic", store, per_step=3)
    indices = torch.arange(16)
    x = views(torch.from_numpy(train.images), indices, 0, 0)
    assert len(x) == 5
    every = store.candidates(indices)
    for p in range(3):
        assert all(any(torch.equal(x[2 + p][i], every[i, k]) for k in range(3)) for i in range(16))
    third = torch.stack(x[2:], 1)                                      # all three slots, each once
    assert all(len({bytes(third[i, p].flatten().tolist()) for p in range(3)}) == 3 for i in range(16))


def test_two_positives_and_online_quality_train(tmp_path, digits_store):
    cfg = tiny_config(tmp_path / "run", "dataset.subset=16", "batch_size=8", "clsp.weight=1",
                      f"clsp.positives={digits_store(16)}", "clsp.positives_per_step=2", "clsp.quality=online")
    out = pretrain(cfg)
    log = read_log(out)
    assert len(log["train/quality_weight_median"]) == 2 and min(log["train/quality_weight_min"]) >= 0
    import json
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["views_per_image"] == 4 and metrics["quality"]["weight_min"] >= 0


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_contrastive_form_trains_and_adds_clsp_contrast(tmp_path, digits_store, method):
    """clsp.form=contrast: the term pretraining adds (and logs as loss_clsp) is losses.clsp_contrast of the step's
    projections, with the quality weights, at the method's temperature."""
    import json

    from clsp.methods.losses import clsp_contrast

    cfg = tiny_config(tmp_path / "run", f"method={method}", "dataset.subset=16", "batch_size=8", "clsp.weight=1",
                      f"clsp.positives={digits_store(16)}", "clsp.positives_per_step=2", "clsp.form=contrast",
                      "clsp.quality=online", *(["moco.queue_size=16"] if method == "moco" else []))
    out = pretrain(cfg)
    log = read_log(out)
    assert len(log["train/loss_clsp"]) == 2 and all(torch.isfinite(torch.tensor(log["train/loss_clsp"])))
    assert json.loads((out / "metrics.json").read_text())["clsp_form"] == "contrast"

    from clsp.methods import method_class
    module = method_class(method)(cfg, data=None, views=None, steps_per_epoch=2)
    torch.manual_seed(0)
    views = [torch.randn(8, 3, 8, 8) for _ in range(4)]
    loss, logs, _ = module.loss_from_views(views, None, torch.tensor(1.0))
    _, z = module.encode(views)
    q = quality_weights(module.quality_scores(views, z))
    assert torch.allclose(logs["train/loss_clsp"], clsp_contrast(z[0], z[2:], q, cfg.temperature), atol=1e-6)


def test_moco_scores_quality_in_the_key_space(tmp_path):
    cfg = tiny_config(tmp_path / "run", "method=moco", "dataset.subset=16", "batch_size=8", "clsp.weight=1",
                      "clsp.third_view=oracle", "clsp.quality=online")
    log = read_log(pretrain(cfg))
    assert len(log["train/quality_score_mean"]) == 2


@pytest.mark.parametrize("overrides, message", [
    (["clsp.positives_per_step=4"], r"positives_per_step=4 .*\(K = 3\)"),
    (["clsp.quality=store"], "no store carries one"),
])
def test_refusals_with_a_store(tmp_path, digits_store, overrides, message):
    cfg = tiny_config(tmp_path / "run", "dataset.subset=16", "batch_size=8", "clsp.weight=1",
                      f"clsp.positives={digits_store(16)}", *overrides)
    with pytest.raises(UserError, match=message):
        pretrain(cfg)
    assert not (tmp_path / "run").exists()                               # nothing half-written


def test_oracle_refused_without_labels(tmp_path):
    from PIL import Image

    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(16):
        Image.fromarray(torch.randint(0, 256, (8, 8, 3), dtype=torch.uint8).numpy()).save(flat / f"{i:02d}.png")
    cfg = tiny_config(tmp_path / "run", f"dataset.name=folder:{flat}", "knn.every_n_epochs=0", "clsp.weight=1",
                      "clsp.third_view=oracle")
    with pytest.raises(UserError, match="oracle .* no labels"):
        pretrain(cfg)
    assert not (tmp_path / "run").exists()
