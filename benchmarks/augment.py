"""Throughput of the `simclr` augmentation, and on CUDA its share of a ResNet-18 training step.

    python benchmarks/augment.py                      # batch 1024, 32x32, 3 views, on cuda if available
    python benchmarks/augment.py --batch 64 --steps 3 # a quick CPU check (--quick: the same, on the CPU)
    python benchmarks/augment.py --record             # also write benchmarks/results/augment-<device>-<date>.json

A step of a CLSP run augments 3 views of a batch (two real views and the synthetic positive) and trains
the encoder on all 3 x batch images. The goal (issue 2): on a GPU the augmentation costs under 15% of
that step. Timings synchronise only around the timed loops, after a warm-up.
"""

from __future__ import annotations

import argparse

import torch

from clsp.benchmark import RESULTS, device_name, record, stamp, timed
from clsp.data.augment import make_augment
from clsp.data.cifar import LAYOUTS

GOAL_SHARE = 0.15


def augment_step(batch: int, size: int, views: int, device: torch.device):
    mean, std = LAYOUTS["cifar10"]["mean"], LAYOUTS["cifar10"]["std"]
    augment = make_augment("simclr", size, mean, std).to(device)
    images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)
    return lambda: [augment(images) for _ in range(views)]


def train_step(batch: int, size: int, views: int, device: torch.device):
    """One SGD step of ResNet-18 (CIFAR stem) on views x batch images: bf16 autocast, channels_last."""
    from clsp.models.backbones import make_backbone

    net, feat_dim = make_backbone("resnet18", "cifar")
    head = torch.nn.Linear(feat_dim, 128)
    model = torch.nn.Sequential(net, head).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(views * batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            z = model(x)
        loss = z.float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _kornia_version() -> str:
    import kornia

    return kornia.__version__


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--train", action=argparse.BooleanOptionalAction, default=None,
                        help="also time the ResNet-18 step (default: on CUDA only)")
    parser.add_argument("--quick", action="store_true", help="CPU, batch 64, 3 steps after 1 warm-up: proves the script runs")
    parser.add_argument("--record", action="store_true", help="write the result as JSON under --results")
    parser.add_argument("--results", default=str(RESULTS), help="where --record writes (default benchmarks/results)")
    args = parser.parse_args(argv)
    if args.quick:
        args.device, args.batch, args.steps, args.warmup = "cpu", 64, 3, 1
    device = torch.device(args.device)
    torch.manual_seed(0)

    aug_s = timed(augment_step(args.batch, args.size, args.views, device), device, args.steps, args.warmup)
    result = stamp({
        "benchmark": "augment", "device": device_name(device),
        "torch": torch.__version__, "kornia": _kornia_version(), "recipe": "simclr", "batch": args.batch, "size": args.size, "views": args.views,
        "steps": args.steps, "quick": args.quick, "augment_ms_per_step": 1000 * aug_s,
        "augment_images_per_s": args.batch * args.views / aug_s,
    })
    print(f"{result['device']}: simclr augmentation, batch {args.batch} x {args.views} views at {args.size}px: "
          f"{result['augment_images_per_s']:,.0f} images/s ({1000 * aug_s:.1f} ms per step)")
    if args.train if args.train is not None else device.type == "cuda":
        train_s = timed(train_step(args.batch, args.size, args.views, device), device, args.steps, args.warmup)
        share = aug_s / (aug_s + train_s)
        result.update(train_ms_per_step=1000 * train_s, augment_share=share, goal_share=GOAL_SHARE,
                      meets_goal=share < GOAL_SHARE)
        print(f"ResNet-18 fwd+bwd on {args.views * args.batch} images (bf16, channels_last): {1000 * train_s:.1f} ms; "
              f"augmentation share of the step {100 * share:.1f}% (goal < {100 * GOAL_SHARE:.0f}%)")
    if args.record:
        result["git_commit"] = result["commit"]  # the field's name before clsp.benchmark
        print(f"recorded {record('augment-quick' if args.quick else 'augment', result, args.results)}")
    return result


if __name__ == "__main__":
    main()
