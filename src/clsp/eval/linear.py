"""Linear evaluation: a linear classifier on frozen backbone features (the paper's protocol).

SGD lr 1.0, no momentum, no weight decay, batch 256, 100 epochs, lr x0.1 at epochs 60 and 80;
horizontal flip is the only training augmentation; the last epoch's test top-1 / top-5 is reported.

Because the backbone is frozen *in eval mode*, its BatchNorm layers use running statistics: a
sample's features do not depend on the other samples in its batch, nor on when they are computed.
With flip the only augmentation, every training input is one of two images, x or mirror(x), so
f(x) and f(mirror(x)) can be computed once and the classifier trained on them: each epoch, each
sample takes the original or the mirror with probability 0.5, exactly as an on-the-fly pipeline
would. Both paths below draw the same per-epoch order and flip decisions from the seed, so they
produce the same classifier up to float rounding (tests/eval/test_linear.py shows it); the
precomputed one is orders of magnitude faster.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from clsp.eval.config import LinearProbeConfig
from clsp.training import step_seed


def epoch_plan(n: int, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample order and the per-sample flip decisions (bool, indexed by sample) of one epoch."""
    g = torch.Generator().manual_seed(step_seed(seed, epoch, stream="linear-probe"))
    order = torch.randperm(n, generator=g)
    flips = torch.rand(n, generator=g) < 0.5
    return order, flips


def init_linear(in_features: int, num_classes: int, seed: int, device) -> nn.Linear:
    """nn.Linear's default initialisation U(-1/sqrt(d), 1/sqrt(d)), drawn from the seed."""
    layer = nn.Linear(in_features, num_classes)
    g = torch.Generator().manual_seed(step_seed(seed, 0, stream="linear-init"))
    bound = 1.0 / math.sqrt(in_features)
    with torch.no_grad():
        layer.weight.copy_(torch.empty_like(layer.weight).uniform_(-bound, bound, generator=g))
        layer.bias.copy_(torch.empty_like(layer.bias).uniform_(-bound, bound, generator=g))
    return layer.to(device)


def _fit(layer: nn.Linear, batch_inputs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], labels: torch.Tensor,
         cfg: LinearProbeConfig, progress: bool) -> list[float]:
    """The SGD loop shared by both paths; `batch_inputs(indices, flips)` gives the features of a batch."""
    n, device = len(labels), labels.device
    opt = torch.optim.SGD(layer.parameters(), lr=cfg.lr, momentum=0.0, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=cfg.gamma)
    epochs = range(cfg.epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="linear probe", unit="epoch", leave=False)
    epoch_losses = []
    for epoch in epochs:
        order, flips = (t.to(device, non_blocking=True) for t in epoch_plan(n, cfg.seed, epoch))
        total = torch.zeros((), device=device)
        for start in range(0, n, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            loss = F.cross_entropy(layer(batch_inputs(idx, flips[idx])), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        schedule.step()
        epoch_losses.append(total / n)  # a device tensor: no host sync inside the loop
    return [float(v) for v in epoch_losses]


def train_linear_probe(feats: torch.Tensor, mirror_feats: torch.Tensor, labels, num_classes: int,
                       cfg: LinearProbeConfig, progress: bool = False) -> tuple[nn.Linear, list[float]]:
    """Train on precomputed features of every image (`feats`) and of its mirror (`mirror_feats`)."""
    device = feats.device
    labels = torch.as_tensor(labels, device=device).long()
    mirror_feats = mirror_feats.to(device)
    layer = init_linear(feats.shape[1], num_classes, cfg.seed, device)

    def batch_inputs(idx, flip):
        return torch.where(flip[:, None], mirror_feats[idx], feats[idx])

    return layer, _fit(layer, batch_inputs, labels, cfg, progress)


def train_linear_probe_on_the_fly(backbone: nn.Module, images, labels, mean, std, size: int, num_classes: int,
                                  cfg: LinearProbeConfig, device=None, progress: bool = False) -> tuple[nn.Linear, list[float]]:
    """The reference path: every step flips its batch's images and runs the frozen backbone on them."""
    from clsp.features import default_device, extract_features

    device = default_device(device)
    images = torch.as_tensor(images).to(device)  # uint8 NHWC, in memory
    labels = torch.as_tensor(labels, device=device).long()

    def batch_inputs(idx, flip):
        batch = torch.where(flip[:, None, None, None], images[idx].flip(2), images[idx])
        return extract_features(backbone, batch, mean, std, size, batch_size=len(idx), device=device)

    feat_dim = batch_inputs(torch.zeros(1, dtype=torch.long, device=device), torch.zeros(1, dtype=torch.bool, device=device)).shape[1]
    layer = init_linear(feat_dim, num_classes, cfg.seed, device)
    return layer, _fit(layer, batch_inputs, labels, cfg, progress)


@torch.no_grad()
def topk_accuracy(layer: nn.Linear, feats: torch.Tensor, labels, ks=(1, 5), batch_size: int = 4096) -> dict[int, float]:
    """Top-k accuracy (percent) of the classifier on features; k is capped at the number of classes."""
    labels = torch.as_tensor(labels, device=feats.device).long()
    correct = {k: torch.zeros((), dtype=torch.long, device=feats.device) for k in ks}
    for start in range(0, len(feats), batch_size):
        logits = layer(feats[start:start + batch_size])
        top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
        hit = top == labels[start:start + batch_size, None]
        for k in ks:
            correct[k] += hit[:, :k].any(dim=1).sum()
    return {k: 100.0 * int(correct[k]) / len(feats) for k in ks}


def features_and_mirror(encoder, dataset, batch_size: int = 512, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of every image and of its mirror, in one pass over the data (streamed sets are read once)."""
    from clsp.features import image_batches

    batches = image_batches(dataset, batch_size, encoder.device)
    if progress and len(dataset) > batch_size:  # no bar for a one-batch loop
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=-(-len(dataset) // batch_size), desc="features + mirrors", unit="batch", leave=False)
    plain, mirror = [], []
    for batch in batches:
        plain.append(encoder.features(batch, batch_size=len(batch), progress=False))
        mirror.append(encoder.features(batch, flip=True, batch_size=len(batch), progress=False))
    return torch.cat(plain), torch.cat(mirror)


def probe(encoder, train_set, test_set, cfg: LinearProbeConfig, progress: bool = True) -> dict:
    """Linear evaluation of an `Encoder` (clsp.eval.features) on a train / test pair; the results dict."""
    from clsp.errors import UserError
    from clsp.eval.metrics import require_labels

    require_labels(train_set, test_set)
    num_classes = len(train_set.classes)
    test_feats = encoder.features(test_set, progress=progress)
    if cfg.on_the_fly:
        if not train_set.resident:
            raise UserError(f"--on-the-fly needs an in-memory dataset; {train_set.name} streams from disk")
        layer, losses = train_linear_probe_on_the_fly(encoder.backbone, train_set.images, train_set.labels, encoder.mean,
                                                      encoder.std, encoder.size, num_classes, cfg, encoder.device, progress)
    else:
        feats, mirror = features_and_mirror(encoder, train_set, progress=progress)
        layer, losses = train_linear_probe(feats, mirror, train_set.labels, num_classes, cfg, progress)
    if not math.isfinite(losses[-1]):
        raise UserError(f"the linear probe diverged on {train_set.name} (training loss {losses[-1]}); "
                        f"try a smaller --lr than {cfg.lr}")
    acc = topk_accuracy(layer, test_feats, test_set.labels)
    return {"top1": acc[1], "top5": acc[5], "final_train_loss": losses[-1], "train_loss": losses,
            "num_classes": num_classes, "n_train": len(train_set), "n_test": len(test_set),
            "fit": fit_status(losses[-1], acc[1], num_classes, len(test_set))}


def fit_status(final_loss: float, top1: float, num_classes: int, n_test: int) -> dict:
    """Did the probe fit? A training loss far above log C (the loss of a uniform guess) means SGD diverged,
    and a test accuracy within three standard errors of chance means nothing was learned: either way the
    accuracy is no measurement of the encoder, and the report shows the fit as failed rather than a number."""
    chance = 100.0 / num_classes
    noise = 300.0 * math.sqrt((1 / num_classes) * (1 - 1 / num_classes) / max(1, n_test))   # 3 SE of chance, in %
    if final_loss > 2 * math.log(num_classes):
        return {"status": "diverged", "reason": f"training loss {final_loss:.3g} > 2 log C = {2 * math.log(num_classes):.2f}"}
    if top1 <= chance + noise:
        return {"status": "at_chance", "reason": f"test top-1 {top1:.2f}% within 3 SE ({noise:.2f}) of chance {chance:.2f}%"}
    return {"status": "ok", "reason": ""}


def linear_table(results: dict, title: str | None = None) -> str:
    from clsp.eval.metrics import format_table

    return format_table(["linear probe", "top-1 (%)", "top-5 (%)"], [["test", results["top1"], results["top5"]]], title)


def linear_eval(encoder_path, dataset_cfg, out_dir=None, probe_cfg: LinearProbeConfig | None = None,
                device=None, progress: bool = True) -> dict:
    """The paper's linear evaluation of an encoder on a dataset's train / test splits; writes metrics.json."""
    from clsp.data.config import load_split
    from clsp.eval.features import open_encoder

    encoder, out = open_encoder(encoder_path, "linear", out_dir, device)
    data_cfg = encoder.dataset_config(dataset_cfg)
    train, test = load_split(data_cfg, data_cfg.train_split), load_split(data_cfg, data_cfg.test_split)
    return evaluate_linear(encoder, train, test, out, probe_cfg or LinearProbeConfig(), progress)


def evaluate_linear(encoder, train, test, out, probe_cfg: LinearProbeConfig, progress: bool = True) -> dict:
    """Linear evaluation of a loaded `Encoder` on loaded sets, recorded in `out` (skipped when already done there)."""
    from clsp.config import to_dict
    from clsp.eval.metrics import dataset_record, run_evaluation

    config = {"kind": "linear", "encoder": str(encoder.path), "dataset": train.name, "splits": [train.split, test.split],
              "image_size": encoder.size, "probe": to_dict(probe_cfg)}
    inputs = {"encoder": encoder.record()["sha256"], "train": train.fingerprint, "test": test.fingerprint}
    title = f"{train.name}: linear probe"
    return run_evaluation(out, "linear", config, inputs,
                          lambda: probe(encoder, train, test, probe_cfg, progress) | {"protocol": to_dict(probe_cfg)},
                          lambda results: linear_table(results, title), encoder.record(), dataset_record(test),
                          train_dataset=dataset_record(train))
