"""Throughput of CLSP-SimCLR pretraining: ResNet-18 (CIFAR stem) at 32x32, batch 1024, 3 views.

Runs the real training step (Lightning, the GPU-resident batch path, kornia augmentation, a positives
store resident on the GPU) over 50k generated images and reports:
  - images/s and seconds per epoch (epoch 2, after cudnn autotuning and warm-up in epoch 1),
  - the share of step time spent in augmentation (the augment call alone, timed with CUDA events),
  - the achieved fraction of bf16 peak: FLOPs of a step (forward + backward of backbone and projector
    on 3 x batch images, counted with torch.utils.flop_counter) / step time / measured bf16 matmul peak.
Goal: <= 4 s per epoch on one H100 (the paper's 1000-epoch CIFAR-10 run in about an hour).

    python benchmarks/pretrain.py [--record]     # GPU
    python benchmarks/pretrain.py --quick        # CPU, small: proves the script runs
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from clsp.benchmark import RESULTS, device_name, matmul_peak_tflops, record, stamp, sync, timed  # noqa: E402
from clsp.config import load_config  # noqa: E402
from clsp.data.augment import make_augment  # noqa: E402
from clsp.methods import method_class  # noqa: E402
from clsp.methods.data import ViewMaker  # noqa: E402
from clsp.methods.pretrain import PretrainConfig  # noqa: E402
from clsp.positives.store import PositivesStore  # noqa: E402
from clsp.training import ResidentBatches, make_trainer  # noqa: E402

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def generated_store(n: int, k: int, size: int, device) -> PositivesStore:
    """A positives store held in memory (random candidates): the real `sample` path, no files."""
    candidates = torch.randint(0, 256, (n, k, size, size, 3), dtype=torch.uint8, device=device)
    manifest = {"dataset": {"n": n, "image_shape": [size, size, 3]}, "generation": {"k": k, "chunk_size": n}}
    return PositivesStore(Path("generated"), manifest, None, candidates)


def step_flops(module, n_images: int, size: int) -> float:
    """FLOPs of forward + backward of backbone and projector on n_images, counted on a small batch."""
    from torch.utils.flop_counter import FlopCounterMode

    import copy

    probe_batch = 8
    net = copy.deepcopy(torch.nn.Sequential(module.backbone, module.projector)).cpu().float()
    x = torch.randn(probe_batch, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        net(x).sum().backward()
    return counter.get_total_flops() * n_images / probe_batch


class EpochTimer:
    """Wall time of each epoch, synchronised with the device at epoch boundaries only."""

    def __init__(self) -> None:
        import lightning as L

        timer = self

        class _Callback(L.Callback):
            def on_train_epoch_start(self, trainer, module):
                sync(module.device)
                timer.starts.append(time.perf_counter())

            def on_train_epoch_end(self, trainer, module):
                sync(module.device)
                timer.ends.append(time.perf_counter())

        self.starts: list[float] = []
        self.ends: list[float] = []
        self.callback = _Callback()

    def epoch_seconds(self) -> list[float]:
        return [e - s for s, e in zip(self.starts, self.ends)]


def augmentation_seconds(augment, images, store, batch: int, device, repeats: int) -> float:
    """Seconds per step spent making the 3 views (gather + candidate draw + one augment call)."""
    views = ViewMaker(augment, "synthetic", store, 0).to(device)
    idx = torch.randint(0, len(images), (batch,), device=device)
    steps = itertools.count()
    return timed(lambda: views(images[idx], idx, next(steps), 0), device, repeats, warmup=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU, 128 images, batch 32, 1 epoch: proves the script runs")
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/pretrain-<device>-<date>.json")
    parser.add_argument("--results", default=str(RESULTS), help="where --record writes (default benchmarks/results)")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2, help="epoch 1 warms up; the last epoch is reported")
    parser.add_argument("--compile", choices=["auto", "true", "false"], default="auto",
                        help="the compiled step (trainer.compile): auto = on CUDA, as pretraining does")
    args = parser.parse_args()

    gpu = torch.cuda.is_available() and not args.quick
    device = torch.device("cuda" if gpu else "cpu")
    n, batch, size, k = (args.images, args.batch, 32, 8) if not args.quick else (128, 32, 32, 2)
    epochs = 1 if args.quick else args.epochs
    overrides = ["dataset.name=cifar10", f"batch_size={batch}", f"epochs={epochs}", "warmup_epochs=0",
                 "clsp.weight=1.0", "clsp.positives=generated", "knn.every_n_epochs=0",
                 f"trainer.accelerator={'gpu' if gpu else 'cpu'}", "trainer.progress=false",
                 "trainer.checkpoint_every=1000000", "trainer.log_every=50"]
    if args.compile != "auto":
        overrides.append(f"trainer.compile={args.compile}")
    cfg = load_config(PretrainConfig, None, overrides)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8)
    store = generated_store(n, k, size, device)
    augment = make_augment("simclr", size, MEAN, STD)
    data = ResidentBatches(images, None, batch, cfg.seed)
    views = ViewMaker(augment, "synthetic", store, cfg.seed)
    steps_per_epoch = data.steps_per_epoch(1)
    module = method_class("simclr")(cfg, data, views, steps_per_epoch)
    if gpu:
        module = module.to(memory_format=torch.channels_last)
    flops = step_flops(module, 3 * batch, size)

    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(cfg.trainer, tmp, max_steps=steps_per_epoch * epochs, max_epochs=epochs,
                               callbacks=[timer.callback], use_distributed_sampler=False)
        trainer.fit(module, train_dataloaders=data.loader(1))
    epoch_s = timer.epoch_seconds()[-1]
    step_s = epoch_s / steps_per_epoch
    aug_s = augmentation_seconds(augment, data.images, views.positives, batch, device, repeats=2 if args.quick else 20)
    peak = matmul_peak_tflops(device, repeats=50) * 1e12 if gpu else None  # bf16, FLOP/s

    result = stamp({
        "benchmark": "pretrain: CLSP-SimCLR ResNet-18 (cifar stem) 32x32, 3 views",
        "device": device_name(device),
        "torch": torch.__version__,
        "precision": trainer.precision,
        "compile": module.compiled_step,
        "images": n, "batch": batch, "views": 3, "steps_per_epoch": steps_per_epoch,
        "epoch_seconds": epoch_s, "epoch_seconds_all": timer.epoch_seconds(),
        "images_per_second": steps_per_epoch * batch / epoch_s,
        "step_seconds": step_s,
        "augmentation_seconds_per_step": aug_s,
        "augmentation_share": aug_s / step_s,
        "step_tflop": flops / 1e12,
        "achieved_tflops": flops / step_s / 1e12,
        "bf16_peak_tflops": None if peak is None else peak / 1e12,
        "fraction_of_bf16_peak": None if peak is None else flops / step_s / peak,
        "goal_epoch_seconds": 4.0,
    })
    print(json.dumps(result, indent=2))
    if args.record:
        print(f"recorded {record('pretrain-quick' if args.quick else 'pretrain', result, args.results)}")


if __name__ == "__main__":
    main()
