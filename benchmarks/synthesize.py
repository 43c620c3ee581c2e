"""Throughput of positive synthesis: anchor images per second at the paper's settings, and what a
whole CIFAR-10 store (50,000 images x K = 8) would take on this device.

    python benchmarks/synthesize.py                 # GPU: ddpm-cifar10 UNet at 32x32, K = 8, DDIM 100 steps
    python benchmarks/synthesize.py --record        # ... and write benchmarks/results/synthesize-<device>-<date>.json
    python benchmarks/synthesize.py --quick         # CPU, tiny UNet, 2 steps: proves the script runs

The UNet's weights are random: the cost of a forward does not depend on them. Each setting is timed
after a warm-up call (kernel selection, allocator), with the device synchronised around the timed
call only. Both settings of share_anchor are measured: shared, the anchor's down+mid pass is run
once per anchor and step instead of once per candidate.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from clsp.benchmark import RESULTS, device_name, record, stamp, timed
from clsp.diffusion.sampler import SamplerConfig, generate_positives
from clsp.diffusion.schedulers import TRAINING_SCHEDULE
from clsp.diffusion.unet import make_unet

CIFAR10_TRAIN = 50_000


def measure(unet, images: int, k: int, cfg: SamplerConfig, device: torch.device, image_size: int) -> dict:
    anchors = torch.randint(0, 256, (images, image_size, image_size, 3), dtype=torch.uint8)
    warm = dataclasses.replace(cfg, steps=min(cfg.steps, 2))  # the same batch shapes, few steps
    generate_positives(unet, TRAINING_SCHEDULE, anchors, k, warm, seed=1, device=device)
    outputs = []
    seconds = timed(lambda: outputs.append(generate_positives(unet, TRAINING_SCHEDULE, anchors, k, cfg, seed=0, device=device)),
                    device, warmup=0)
    [out] = outputs
    assert out.shape == (images, k, image_size, image_size, 3)
    per_s = images / seconds
    return {"share_anchor": cfg.share_anchor, "images": images, "seconds": round(seconds, 3),
            "images_per_s": round(per_s, 3), "candidates_per_s": round(per_s * k, 2),
            "unet_evals_per_s": round(per_s * k * cfg.steps, 1),
            "cifar10_hours": round(CIFAR10_TRAIN / per_s / 3600, 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CPU, tiny UNet, 2 steps, a few images")
    parser.add_argument("--record", action="store_true", help="write the result as JSON under --results")
    parser.add_argument("--results", default=str(RESULTS), help="where --record writes (default benchmarks/results)")
    parser.add_argument("--images", type=int, default=None, help="anchor images per timed call")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per UNet batch (sampler.batch_size)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--k", type=int, default=None)
    args = parser.parse_args(argv)

    if args.quick:
        device, preset, size = torch.device("cpu"), "tiny", 16
        images, k, steps, batch = args.images or 4, args.k or 2, args.steps or 2, args.batch_size or 8
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --quick for the CPU smoke run", file=sys.stderr)
            return 2
        device, preset, size = torch.device("cuda"), "ddpm-cifar10", 32
        images, k, steps, batch = args.images or 256, args.k or 8, args.steps or 100, args.batch_size or 1024
    torch.manual_seed(0)
    unet = make_unet(preset, size).to(device).eval()
    base = SamplerConfig(sampler="ddim", steps=steps, eta=0.1, w=0.1, batch_size=batch)
    rows = [measure(unet, images, k, dataclasses.replace(base, share_anchor=share), device, size) for share in (False, True)]

    result = stamp({
        "benchmark": "synthesize", "device": device_name(device), "quick": args.quick,
        "setting": {"unet": preset, "image_size": size, "k": k, "sampler": dataclasses.asdict(base)},
        "results": rows,
    })
    for r in rows:
        print(f"share_anchor={r['share_anchor']!s:5}: {r['images_per_s']:9.2f} images/s ({r['candidates_per_s']:.1f} "
              f"candidates/s, {r['unet_evals_per_s']:.0f} UNet evals/s) on {result['device']}; CIFAR-10, 50k images x K={k} "
              f"x {steps} steps: {r['cifar10_hours']:.2f} h")
    if args.record:
        print(f"wrote {record('synthesize-quick' if args.quick else 'synthesize', result, args.results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
