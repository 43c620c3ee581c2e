"""Throughput of stage 1 (DDPM training) and stage 2 (CLSP interpolated sampling), against the device's peak.

    python benchmarks/diffusion.py                 # ddpm-cifar10 at 32x32, bf16 on the GPU
    python benchmarks/diffusion.py --quick         # tiny sizes: checks that the script runs (CPU is fine)
    python benchmarks/diffusion.py --record        # also write benchmarks/results/diffusion-<device>-<date>.json

FLOPs per image (PAPER.md, counted for the 35.7M UNet at 32x32): a full forward 12.44 GFLOP, the anchor's
down + mid path 3.33 GFLOP; training costs 3x a forward (forward + backward). Interpolated sampling
costs full + down_mid per image-step, or full + down_mid / K with share_anchor. For other presets or
sizes the FLOPs are counted here with torch's FlopCounterMode (printed for ddpm-cifar10 too, as a check).
Peak: a large bf16 matmul measured on the same device (fp32 on a CPU, where the loops run in fp32).
"""

from __future__ import annotations

import argparse

import torch

from clsp.benchmark import RESULTS, device_name, matmul_peak_tflops, record, stamp, timed

PAPER_GFLOP = {("ddpm-cifar10", 32): (12.44, 3.33)}       # (full forward, down + mid) per image
GOALS = {"train": 0.30, "sample": 0.35}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="ddpm-cifar10")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--train-batch", type=int, default=128)
    p.add_argument("--train-steps", type=int, default=30, help="timed training steps (after warm-up)")
    p.add_argument("--anchors", type=int, default=128, help="anchors per sampling batch")
    p.add_argument("--k", type=int, default=8, help="candidates per anchor: anchors x k trajectories per batch")
    p.add_argument("--sample-steps", type=int, default=20, help="timed denoising steps")
    p.add_argument("--matmul", type=int, default=8192, help="side of the square bf16 matmul for the peak")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet for training")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs (e.g. on CPU)")
    p.add_argument("--record", action="store_true", help="write the results as JSON under --results")
    p.add_argument("--results", default=str(RESULTS), help="where --record writes (default benchmarks/results)")
    args = p.parse_args()
    if args.quick:
        args.preset, args.size, args.train_batch, args.train_steps = "tiny", 16, 8, 3
        args.anchors, args.k, args.sample_steps, args.matmul = 4, 2, 2, 256
    return args


def counted_gflop(unet, size: int, device: torch.device) -> tuple[float, float]:
    """(full forward, down + mid) GFLOP for one image, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    from clsp.diffusion.sampler import anchor_features

    x, t = torch.zeros(1, 3, size, size, device=device), torch.tensor([500], device=device)
    counts = []
    for fn in (lambda: unet(x, t), lambda: anchor_features(unet, x, t)):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn()
        counts.append(counter.get_total_flops() / 1e9)
    return counts[0], counts[1]


def train_throughput(args, device: torch.device, dtype_ctx) -> float:
    """Training steps per second: the loss, backward, clipping, Adam and EMA update of train.py."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from clsp.diffusion.schedulers import training_scheduler
    from clsp.diffusion.train import diffusion_loss, random_flip
    from clsp.diffusion.unet import make_unet

    unet = make_unet(args.preset, args.size).to(device)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    unet.to(memory_format=memory_format)
    ema = AveragedModel(unet, multi_avg_fn=get_ema_multi_avg_fn(0.9999), use_buffers=True)
    optimizer = torch.optim.Adam(unet.parameters(), lr=2e-4, fused=device.type == "cuda")
    schedule = training_scheduler()
    model = torch.compile(unet) if args.compile else unet
    x0 = (torch.rand(args.train_batch, 3, args.size, args.size, device=device) * 2 - 1).contiguous(memory_format=memory_format)

    def step():
        with dtype_ctx():
            loss = diffusion_loss(model, schedule, random_flip(x0))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update_parameters(unet)

    return 1.0 / timed(step, device, args.train_steps, warmup=3)


def sample_throughput(args, device: torch.device, share_anchor: bool) -> float:
    """Image-steps per second of generate_positives (anchors x k trajectories in one UNet batch)."""
    from clsp.diffusion.sampler import SamplerConfig, generate_positives
    from clsp.diffusion.schedulers import TRAINING_SCHEDULE
    from clsp.diffusion.unet import make_unet

    unet = make_unet(args.preset, args.size).eval()
    anchors = torch.randint(0, 256, (args.anchors, args.size, args.size, 3), dtype=torch.uint8)
    n = args.anchors * args.k
    cfg = SamplerConfig(steps=args.sample_steps, share_anchor=share_anchor, batch_size=n)
    seconds = timed(lambda: generate_positives(unet, TRAINING_SCHEDULE, anchors, args.k, cfg, 0, device), device)
    return n * args.sample_steps / seconds


def main() -> None:
    import contextlib

    from clsp.diffusion.unet import make_unet

    args = parse_args()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    dtype_ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_gpu else contextlib.nullcontext
    name = device_name(device)

    peak = matmul_peak_tflops(device, args.matmul)
    counted_full, counted_mid = counted_gflop(make_unet(args.preset, args.size).eval().to(device), args.size, device)
    full, down_mid = PAPER_GFLOP.get((args.preset, args.size), (counted_full, counted_mid))
    print(f"device: {name}; {'bf16' if on_gpu else 'fp32'} matmul peak {peak:.3g} TFLOP/s")
    print(f"{args.preset} at {args.size}px: {full:.2f} GFLOP forward, {down_mid:.2f} down+mid per image "
          f"(counted here: {counted_full:.2f} / {counted_mid:.2f})")

    results = stamp({"device": name, "torch": torch.__version__, "preset": args.preset, "image_size": args.size,
                     "precision": "bf16-autocast" if on_gpu else "fp32", "quick": args.quick,
                     "matmul_peak_tflops": peak, "gflop_forward": full, "gflop_down_mid": down_mid,
                     "gflop_counted": {"forward": counted_full, "down_mid": counted_mid}})

    steps_per_s = train_throughput(args, device, dtype_ctx)
    tflops = steps_per_s * args.train_batch * 3 * full / 1e3
    results["train"] = {"batch": args.train_batch, "steps_per_s": steps_per_s, "images_per_s": steps_per_s * args.train_batch,
                        "tflops": tflops, "fraction_of_peak": tflops / peak, "goal": GOALS["train"], "compile": args.compile}
    print(f"train: {steps_per_s:.2f} steps/s at batch {args.train_batch} = {tflops:.3g} TFLOP/s "
          f"({100 * tflops / peak:.0f}% of peak; goal {100 * GOALS['train']:.0f}%)")

    for share in (False, True):
        rate = sample_throughput(args, device, share)
        per_image_step = full + (down_mid / args.k if share else down_mid)
        tflops = rate * per_image_step / 1e3
        key = "sample_share_anchor" if share else "sample"
        results[key] = {"trajectories": args.anchors * args.k, "k": args.k, "steps": args.sample_steps,
                        "image_steps_per_s": rate, "tflops": tflops, "fraction_of_peak": tflops / peak, "goal": GOALS["sample"]}
        print(f"{key}: {rate:.0f} image-steps/s with {args.anchors * args.k} trajectories = {tflops:.3g} TFLOP/s "
              f"({100 * tflops / peak:.0f}% of peak; goal {100 * GOALS['sample']:.0f}%)")

    if args.record:
        print(f"recorded {record('diffusion-quick' if args.quick else 'diffusion', results, args.results)}")


if __name__ == "__main__":
    main()
