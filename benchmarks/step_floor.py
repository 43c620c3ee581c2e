"""The floor under `step_overhead.py`: the same network, heads, optimiser and (for MoCo) queue in a bare PyTorch
loop, with no Lightning, no augmentation, no probe, no logging. What clsp's step costs above this is plumbing;
what this costs is the arithmetic and oneDNN's per-call weight handling, which no plumbing change removes.

Each shape runs with the weights and inputs channels_last (as pretraining runs them) and contiguous, alternated
in one process so that both see the same load:
  - `bench`: step_overhead.py's size (batch 2 x 3 views, 8 px, ResNet-18 at width 64, CIFAR stem, the presets'
    heads; MoCo: a key encoder updated by lerp, and two InfoNCE terms against queues of 32768);
  - `cpu-study-2`: the second CPU study's step (width 16, CIFAR stem, batch 200 x 3 views, 16 px);
  - `demo`: the demo's step (width 32, STL stem, batch 200 x 3 views, 16 px).
The goal it judges (issue 29: CLSP-SimCLR <= 60 ms, CLSP-MoCo <= 80 ms at `bench`, eager, one thread) can only be
met by clsp's step if it is met here first.

    python benchmarks/step_floor.py [--record] [--shapes bench cpu-study-2 demo] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from clsp.benchmark import RESULTS, device_name, record, stamp  # noqa: E402
from clsp.methods.losses import infonce_queue, nt_xent  # noqa: E402
from clsp.models.backbones import make_backbone  # noqa: E402
from clsp.models.heads import make_projector  # noqa: E402

# name: (stem, width, batch per view, image size, projector hidden, projector out, timed steps)
SHAPES = {"bench": ("cifar", 64, 2, 8, 4096, 256, 20),
          "cpu-study-2": ("cifar", 16, 200, 16, 512, 128, 6),
          "demo": ("stl", 32, 200, 16, 512, 128, 6)}
QUEUE = 32768


def make_step(method: str, shape: str, channels_last: bool):
    """One training step of `method` at `shape` as a closure, and the objects it holds."""
    stem, width, batch, size, hidden, out, _ = SHAPES[shape]
    torch.manual_seed(0)
    backbone, feat_dim = make_backbone("resnet18", stem, width)
    model = nn.Sequential(backbone, make_projector(feat_dim, hidden, out))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    params = list(model.parameters())
    optimiser = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4, fused=True)
    views = [torch.randn(batch, 3, size, size).contiguous(memory_format=fmt) for _ in range(3)]
    key_model = copy.deepcopy(model).requires_grad_(False) if method == "moco" else None
    key_params = list(key_model.parameters()) if key_model is not None else []
    queues = F.normalize(torch.randn(2, QUEUE, out), dim=-1) if method == "moco" else None

    def step() -> None:
        z = model(torch.cat(views)).chunk(3)                # the views in one forward, as clsp's step
        if key_model is None:
            loss = nt_xent([z[0], z[1]], 0.2) + nt_xent([z[0], z[2]], 0.2)
        else:
            with torch.no_grad():
                torch._foreach_lerp_(key_params, params, 0.01)
                k1, k2 = key_model(torch.cat(views[:2])).chunk(2)
            loss = (infonce_queue(z[0], k2, queues[1], 0.2) + infonce_queue(z[1], k1, queues[0], 0.2)) / 2
            loss = loss + nt_xent([z[0], z[2]], 0.2)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


def timed_ms(step, steps: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--methods", nargs="+", default=["simclr", "moco"], choices=["simclr", "moco"])
    parser.add_argument("--rounds", type=int, default=3, help="channels_last / contiguous pairs per shape and method")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default: 20 at bench, 6 at the others)")
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/step-floor-<device>-<date>.json")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    results = []
    for shape in args.shapes:
        for method in args.methods:
            if method == "moco" and shape != "bench":
                continue                                    # the CPU presets' MoCo runs are not this file's question
            steps = args.steps or SHAPES[shape][-1]
            ms = {True: [], False: []}
            for _ in range(args.rounds):
                for channels_last in (True, False):
                    ms[channels_last].append(statistics.median(timed_ms(make_step(method, shape, channels_last), steps)))
            ratios = [b / a for a, b in zip(ms[True], ms[False])]
            row = {"shape": shape, "method": method, "ms_channels_last": ms[True], "ms_contiguous": ms[False],
                   "median_ms_channels_last": statistics.median(ms[True]),
                   "median_ms_contiguous": statistics.median(ms[False]),
                   "contiguous_over_channels_last": statistics.median(ratios)}
            results.append(row)
            print(f"{shape:12s} {method:7s} channels_last {row['median_ms_channels_last']:7.1f} ms, contiguous "
                  f"{row['median_ms_contiguous']:7.1f} ms, contiguous/channels_last {row['contiguous_over_channels_last']:.2f}"
                  f" ({args.rounds} pairs)", flush=True)
    result = stamp({"benchmark": "step floor: a bare PyTorch step (no Lightning, augmentation, probe or logging) "
                                 "with the network, heads, fused SGD and MoCo queue of clsp's step",
                    "device": device_name("cpu"), "threads": args.threads, "shapes": {s: SHAPES[s] for s in args.shapes},
                    "load_average_1min_start": load_start, "load_average_1min_end": os.getloadavg()[0],
                    "cpus": len(os.sched_getaffinity(0)),
                    "goal": "issue 29: CLSP-SimCLR <= 60 ms, CLSP-MoCo <= 80 ms at `bench`, eager, one thread",
                    "results": results})
    if args.record:
        print(f"recorded {record('step-floor', result, args.results, device='cpu')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
