"""Your own image folder to synthetic positives and a SimCLR + CLSP encoder, through clsp's library API alone.

    python examples/own_dataset.py --data MY_FOLDER --out runs/own      (MY_FOLDER/<class>/<image>, as ImageFolder reads it)

1. Positives: K candidates per image from a diffusion model: by default the one shipped with clsp (16 px, grey:
   Fashion-MNIST-like images; for yours, train one with `clsp diffusion train --dataset folder:MY_FOLDER` and pass
   its directory as --model), written to a store beside the run (made once; a rerun reuses it).
2. An encoder: torchvision's ResNet-18 (small-image stem) trained with SimCLR's NT-Xent plus the CLSP term, the
   store wrapping the ImageFolder, so each batch brings one augmented synthetic positive per image. The store
   checks that the folder holds the images it was made from, in the same order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision import transforms as T

import clsp


def nt_xent(z0: torch.Tensor, z1: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's loss: each view's positive is the other view of its image, the other 2B - 2 views its negatives."""
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    n = len(z0)
    return F.cross_entropy(logits, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))


class TwoViews:
    """Two independent draws of an augmentation (the real views of SimCLR)."""

    def __init__(self, augment) -> None:
        self.augment = augment

    def __call__(self, image):
        return self.augment(image), self.augment(image)


def make_positives(folder: str, store: Path, model: str, k: int, steps: int, size: int, channels: int) -> None:
    """Every image of the folder, in ImageFolder's order, at the model's size and channels -> K candidates each."""
    grey = [T.Grayscale(num_output_channels=1)] if channels == 1 else []
    anchors = torchvision.datasets.ImageFolder(folder, transform=T.Compose([*grey, T.Resize(size), T.CenterCrop(size),
                                                                            T.PILToTensor()]))
    images = torch.stack([image for image, _ in anchors])                           # uint8 (N, C, H, W)
    candidates = torch.cat([clsp.generate_positives(model, batch, k=k, steps=steps, seed=i)
                            for i, batch in enumerate(images.split(256))])          # uint8 (N, K, C, H, W)
    files = [path for path, _ in anchors.samples]                                   # what the store checks the folder by
    clsp.PositivesStore.save(store, candidates, images, labels=anchors.targets, files=files)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="an image folder: one subfolder of images per class")
    parser.add_argument("--out", required=True, help="the run's folder: positives/ (the store) and encoder.pt")
    parser.add_argument("--model", default="clsp:fashion-mnist-16", help="diffusion model: clsp:NAME or a directory")
    parser.add_argument("--size", type=int, default=16, help="the model's image side (the images are resized to it)")
    parser.add_argument("--channels", type=int, default=1, choices=[1, 3], help="the model's channels")
    parser.add_argument("--k", type=int, default=8, help="candidates per image")
    parser.add_argument("--steps", type=int, default=100, help="denoising steps per candidate")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--clsp-weight", type=float, default=1.0, help="lambda of the CLSP term")
    args = parser.parse_args(argv)
    out = Path(args.out)
    store = out / "positives"
    if not store.exists():
        make_positives(args.data, store, args.model, args.k, args.steps, args.size, args.channels)

    torch.manual_seed(0)
    augment = T.Compose([T.RandomResizedCrop(args.size, scale=(0.2, 1.0)), T.RandomHorizontalFlip(),
                         T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
                         T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    folder = torchvision.datasets.ImageFolder(args.data, transform=T.Compose([T.Resize(args.size), TwoViews(augment)]))
    dataset = clsp.PositivesStore.open(store, folder, positive_transform=augment)     # (((x0, x1), label), x2)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True)

    backbone = torchvision.models.resnet18()
    backbone.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)                           # small images: no downsampling stem
    backbone.maxpool, backbone.fc = nn.Identity(), nn.Identity()
    projector = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128))
    # lambda rises from 0 over the first epoch (clsp.ramp_epochs=1): from scratch, a candidate is at first no closer to
    # its anchor than any image, and the full term at once can collapse a short run (configs/cpu-study.yaml says why)
    clsp_term = clsp.CLSPTerm(weight=args.clsp_weight, ramp_steps=len(loader))
    parameters = [*backbone.parameters(), *projector.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=0.06, momentum=0.9, weight_decay=5e-4)

    step, losses = 0, []
    for epoch in range(args.epochs):
        total = 0.0
        for ((x0, x1), _), x2 in loader:
            z0, z1, z2 = projector(backbone(torch.cat([x0, x1, x2]))).chunk(3)
            loss = nt_xent(z0, z1) + clsp_term(z0, z2, step)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step, total = step + 1, total + loss.item()
        losses.append(total / max(1, len(loader)))
        print(f"epoch {epoch}: loss {losses[-1]:.4f}")
    torch.save(backbone.state_dict(), out / "encoder.pt")
    return {"store": store, "encoder": out / "encoder.pt", "losses": losses, "steps": step}


if __name__ == "__main__":
    try:
        main()
    except clsp.UserError as e:                     # bad input (e.g. a folder the store was not made from): one line
        print(f"own_dataset.py: error: {e}", file=sys.stderr)
        sys.exit(2)
