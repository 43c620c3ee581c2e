"""The reference classifier: the judge of synthetic positives.

Whether a candidate keeps its anchor's class is an outcome no pixel statistic can tell; the only
offline judge of "what class is this image" is a classifier trained on the real labelled images.
This one is deliberately small (three conv blocks, global average pooling, a linear head) so that it
trains in well under a minute on a CPU at 16-32 px, and it is cached in the data cache by the
fingerprint of the data it was trained on (and its recipe), so each dataset pays for it once.

Its pooled features are the space of the Frechet distance and of the hardness numbers of
`clsp eval positives` (the offline stand-in for Inception, which no registry here carries).
Images are scaled to [-1, 1] per channel, nothing else: the classifier must see candidates exactly
as stored, not through the encoder's normalisation.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clsp.eval.config import ReferenceConfig

log = logging.getLogger("clsp")

RECIPE_VERSION = 2          # bump when the network or the training recipe changes (invalidates the cache)
# Judges shipped with the package (the CPU demo's, Fashion-MNIST at 16 px), looked up after the data cache:
# clsp/pretrained/reference/<key>/, where <key> is `reference_key` of the data and recipe they were made for.
SHIPPED_REFERENCES = Path(__file__).resolve().parents[1] / "pretrained" / "reference"


class ReferenceNet(nn.Module):
    """conv3x3-BN-ReLU blocks at full, 1/2 and 1/4 resolution, two convs each; pooled features; linear head."""

    def __init__(self, channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.body = nn.Sequential(block(channels, width, 1), block(width, 2 * width, 2), block(2 * width, 4 * width, 2))
        self.head = nn.Linear(4 * width, num_classes)
        self.feat_dim = 4 * width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Training augmentation: horizontal flip, a shift of up to 2 pixels, and brightness and contrast. A class does
    not depend on how bright or contrasted an image is, and the judge must say the class of candidates whose style
    (by design) differs from the real images'; trained on real images alone it reads brightness as evidence."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (2, 2, 2, 2), value=-1.0)
    dy, dx = torch.randint(0, 5, (2,), generator=generator).tolist()   # one shift per batch: cheap, enough
    x = padded[:, :, dy:dy + h, dx:dx + w]
    contrast = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=generator)                  # x0.6 .. x1.4 around the mean
    brightness = 0.4 * torch.rand(n, 1, 1, 1, generator=generator) - 0.2               # +-0.1 of the [0, 1] range
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp(-1.0, 1.0)


class Reference:
    """A trained reference classifier with its record (test accuracy, data, recipe)."""

    def __init__(self, net: ReferenceNet, record: dict) -> None:
        self.net, self.record = net.eval(), record

    @property
    def test_accuracy(self) -> float:
        return float(self.record["test_accuracy"])

    @torch.no_grad()
    def predict(self, images, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """(predicted classes (N,), L2-normalised pooled features (N, d)) of uint8 (N, H, W, C) images."""
        images = torch.as_tensor(np.ascontiguousarray(images))
        labels, feats = [], []
        for start in range(0, len(images), batch_size):
            f = self.net.features(to_input(images[start:start + batch_size]))
            labels.append(self.net.head(f).argmax(1))
            feats.append(F.normalize(f, dim=1))
        return torch.cat(labels).numpy(), torch.cat(feats).numpy()

    @torch.no_grad()
    def raw_features(self, images, batch_size: int = 1024) -> np.ndarray:
        """Un-normalised pooled features (N, d): the space of the Frechet distance."""
        images = torch.as_tensor(np.ascontiguousarray(images))
        return torch.cat([self.net.features(to_input(images[s:s + batch_size]))
                          for s in range(0, len(images), batch_size)]).double().numpy()


def train_reference(train, test, cfg: ReferenceConfig) -> Reference:
    """Train on (a fixed subset of) `train`, score on `test`; deterministic for a seed."""
    import time

    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    idx = np.arange(len(train))
    if len(idx) > cfg.max_train:
        idx = np.sort(np.random.default_rng(cfg.seed).permutation(len(idx))[: cfg.max_train])
    images = torch.from_numpy(train.images_at(idx))
    labels = torch.from_numpy(train.labels[idx])
    net = ReferenceNet(images.shape[-1], len(train.classes), cfg.width)
    steps_per_epoch = max(1, len(images) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=total, pct_start=0.15)
    started = time.perf_counter()
    net.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(images), generator=generator)
        for step in range(steps_per_epoch):
            batch = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x = _augment(to_input(images[batch]), generator)
            loss = F.cross_entropy(net(x), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    reference = Reference(net, {})
    predicted, _ = reference.predict(test.images)
    accuracy = float((predicted == test.labels).mean() * 100)
    reference.record = {"test_accuracy": accuracy, "train_images": int(len(images)), "test_images": int(len(test)),
                        "train_fingerprint": train.fingerprint, "test_fingerprint": test.fingerprint,
                        "classes": list(train.classes), "channels": int(images.shape[-1]),
                        "image_size": int(images.shape[1]), "seconds": round(time.perf_counter() - started, 1),
                        "recipe": asdict(cfg), "recipe_version": RECIPE_VERSION}
    return reference


def reference_classifier(train, test, cfg: ReferenceConfig | None = None, cache: bool = True) -> Reference:
    """The reference classifier for this labelled train / test pair: from the cache, else trained and cached."""
    from clsp.data.sets import cache_dir

    cfg = cfg or ReferenceConfig()
    key = reference_key(train, test, cfg)
    folder = cache_dir() / "reference" / key
    if cache:
        for place in (folder, SHIPPED_REFERENCES / key):       # the data cache, then the judges clsp ships
            if (found := _load(place, cfg)) is not None:
                return found
    log.info("reference classifier: training on %d %s images (cached afterwards in %s)",
             min(len(train), cfg.max_train), train.name, folder)
    reference = train_reference(train, test, cfg)
    log.info("reference classifier: test accuracy %.2f%% (%s s)", reference.test_accuracy, reference.record["seconds"])
    if cache:
        try:
            _save(folder, reference)
        except OSError as e:
            log.info("reference classifier: not cached (%s)", e)
    return reference


def reference_key(train, test, cfg: ReferenceConfig) -> str:
    """The cache key of a judge: the data it learns from and is scored on, and its recipe."""
    from clsp.io import hash_json

    return hash_json({"train": train.fingerprint, "test": test.fingerprint, "recipe": asdict(cfg), "version": RECIPE_VERSION})


def _load(folder: Path, cfg: ReferenceConfig) -> Reference | None:
    weights, record_file = folder / "model.safetensors", folder / "record.json"
    if not (weights.is_file() and record_file.is_file()):
        return None
    try:
        from safetensors.torch import load_file

        from clsp.io import read_json

        record = read_json(record_file)
        net = ReferenceNet(int(record["channels"]), len(record["classes"]), cfg.width)
        net.load_state_dict(load_file(str(weights)))
        return Reference(net, record)
    except (OSError, ValueError, KeyError, RuntimeError):
        log.info("reference classifier: the copy in %s does not load; training it again", folder)
        return None


def _save(folder: Path, reference: Reference) -> None:
    from safetensors.torch import save_file

    from clsp.io import atomic_path, write_json_atomic

    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in reference.net.state_dict().items()}, str(tmp))
    write_json_atomic(folder / "record.json", reference.record)
