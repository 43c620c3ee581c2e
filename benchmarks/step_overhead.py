"""Host overhead of one pretraining step at negligible compute: aten calls and milliseconds per step.

Each method runs its real training step with the CLSP term (three views): the Lightning loop, the
resident batch path, kornia augmentation, a resident positives store, the method's heads, queues and
optimiser from its CIFAR-10 preset, ResNet-18. The images are 8 px and the batch is 2, so the
arithmetic on activations is negligible and what a step costs is Python and dispatch, plus work
that does not shrink with the batch: queue-sized copies and searches, and on a CPU everything the
size of the weights (oneDNN's weight handling in each convolution, the weight gradients, the
optimiser over ~14M parameters). ResNet-18 runs at the width the presets train (--width, 64 by
default: the weights' per-call cost is what a wide network adds to every step, issue 29), as pretraining
builds it (channels_last). Each method also runs on a narrow copy of ResNet-18 (the same blocks and ops
at 4-32 channels, heads of width 64): what is left there is the host's work. `--cpu-study` runs the same
step at the CPU study's sizes instead (ResNet-18 at width 32 with the 64 px stem, heads 512/128, batch
200, 16 px views, MoCo's queue 2000). Per method and backbone:
  - aten calls per step (torch.profiler over one whole step: the aten calls made from Python or from
    compiled code, not those nested in another aten call), split into phases: views (batch and
    augmentation), forward (encode and losses, Lightning's logging), backward, optimiser;
  - milliseconds per step (median, min, max over the timed steps) and the median of each phase.
The aten count is the host's dispatch work and does not depend on the machine's load; the times do
(the result records the 1-minute load average).
Goals: issue 19, CLSP-SimCLR at most 15 ms and under 1,000 aten calls per step with the compiled step
(host work: the narrow backbone's figures); issue 29, at width 64, eager, one thread, CLSP-SimCLR at most
60 ms and CLSP-MoCo at most 80 ms per step.

    python benchmarks/step_overhead.py [--record] [--label after] [--methods simclr moco] [--compile true]
        [--backbone narrow] [--width 64] [--cpu-study]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from clsp.benchmark import RESULTS, device_name, record, stamp  # noqa: E402
from clsp.config import CONFIG_DIR, load_config  # noqa: E402
from clsp.methods.pretrain import PretrainConfig  # noqa: E402

PRESETS = {"simclr": "cifar10-simclr-clsp", "moco": "cifar10-moco-clsp", "nnclr": "cifar10-nnclr",
           "all4one": "cifar10-all4one"}


class AtenCounter:
    """Counts the aten calls of one step with torch.profiler, by phase: the calls made from Python or from
    compiled code (an aten op called inside another, e.g. addmm inside linear, is not counted again).
    The profiler, unlike a TorchDispatchMode, leaves torch.compile's graphs running as they run."""

    def __init__(self) -> None:
        self.profile = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        self.phase, self._range = "views", None

    def __enter__(self) -> "AtenCounter":
        self.profile.__enter__()
        self.enter_phase("views")
        return self

    def enter_phase(self, phase: str) -> None:
        if self._range is not None:
            self._range.__exit__(None, None, None)
        self.phase = phase
        self._range = torch.profiler.record_function(f"phase::{phase}")
        self._range.__enter__()

    def __exit__(self, *exc) -> None:
        self._range.__exit__(None, None, None)
        self.profile.__exit__(None, None, None)
        self.phase = "done"

    def counts(self) -> tuple[dict[str, int], Counter]:
        """Top-level aten calls per phase. Phases are told by time, not by the profiler's tree: Lightning
        runs the forward and backward inside optimizer.step(closure), so the ranges do not nest."""
        events = self.profile.events()
        phases = [(e.time_range.start, e.time_range.end, e.name[len("phase::"):]) for e in events
                  if e.name.startswith("phase::")]
        calls, ops = Counter(), Counter()
        for event in events:
            if not event.name.startswith("aten::") or _inside_aten(event):
                continue
            start = event.time_range.start
            phase = next((name for lo, hi, name in phases if lo <= start <= hi), None)
            if phase is not None:
                calls[phase] += 1
                ops[event.name] += 1
        return dict(calls), ops


def _inside_aten(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return True
        parent = parent.cpu_parent
    return False


PHASES = ("views", "forward", "backward", "optimiser")
NARROW_WIDTH = 4      # ResNet-18's blocks at 4-32 channels: its op structure without its weights' size


def narrow_resnet18(weights=None):
    """torchvision's ResNet-18 layout (2-2-2-2 basic blocks, stem of 64 channels) with stages of
    4, 8, 16, 32 channels: every op of a ResNet-18 step, and weights too small to cost anything."""
    from torchvision.models.resnet import BasicBlock, ResNet

    net = ResNet(BasicBlock, [2, 2, 2, 2])
    net.inplanes = 64
    w = NARROW_WIDTH
    net.layer1 = net._make_layer(BasicBlock, w, 2)
    net.layer2 = net._make_layer(BasicBlock, 2 * w, 2, stride=2)
    net.layer3 = net._make_layer(BasicBlock, 4 * w, 2, stride=2)
    net.layer4 = net._make_layer(BasicBlock, 8 * w, 2, stride=2)
    return net


def register_narrow_backbone() -> str:
    from clsp.models import backbones

    backbones.ARCHS["resnet18-narrow"] = (narrow_resnet18, 8 * NARROW_WIDTH)
    return "resnet18-narrow"


def step_probe(count_step: int, alternate_from: int | None = None):
    """A Lightning callback timing every step and its phases, and counting the aten calls of step `count_step`.
    `alternate_from`: from that step on, odd steps run the eager step function instead of the compiled one
    (the counted step stays compiled), so both are timed in one run under the same load."""
    import lightning as L

    class Probe(L.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []
            self.phase_ms: dict[str, list[float]] = {phase: [] for phase in PHASES}
            self.counter: AtenCounter | None = None
            self._mark = 0.0
            self.compiled, self.modes = None, []

        def _enter(self, phase: str) -> None:
            now = time.perf_counter()
            previous = PHASES[PHASES.index(phase) - 1]
            self.phase_ms[previous].append(1e3 * (now - self._mark))
            self._mark = now
            if self.counter is not None and self.counter.phase != "done":
                self.counter.enter_phase(phase)

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            step = trainer.global_step
            if alternate_from is not None:
                if self.compiled is None:
                    self.compiled = module.step_loss
                eager = step >= alternate_from and step % 2 == 1 and step != count_step
                module.step_loss = module.loss_from_views if eager else self.compiled
                self.modes.append("eager" if eager else "compiled")
            self._mark = time.perf_counter()
            self.starts.append(self._mark)
            views = module.views

            def timed_views(*args, **kwargs):      # the views phase ends when the views are made
                out = views(*args, **kwargs)
                self._enter("forward")
                module.views = views
                return out
            module.views = timed_views
            if trainer.global_step == count_step:
                self.counter = AtenCounter()
                self.counter.__enter__()

        def on_before_backward(self, trainer, module, loss):
            self._enter("backward")

        def on_before_optimizer_step(self, trainer, module, optimizer):
            self._enter("optimiser")

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.phase_ms["optimiser"].append(1e3 * (time.perf_counter() - self._mark))
            if self.counter is not None and self.counter.phase != "done":
                self.counter.__exit__(None, None, None)

        def on_train_end(self, trainer, module):
            self.starts.append(time.perf_counter())

    return Probe()


CPU_STUDY = {"batch": 200, "size": 16, "overrides": ["backbone.stem=stl", "projector.hidden_dim=512",
                                                   "projector.out_dim=128", "moco.queue_size=2000"]}


def run_method(method: str, steps: int, warmup: int, compile_step: bool | None, narrow: bool = False,
               alternate: bool = False, width: int = 64, cpu_study: bool = False) -> dict:
    """Train `method` for warmup + steps + 1 steps at batch 2, 8 px; time the middle steps, count the last.
    `narrow`: the narrow ResNet-18 and heads of width 64, so that only the host's work is left; else
    ResNet-18 at `width`. `cpu_study`: the CPU study's batch, image size and heads (CPU_STUDY)."""
    from clsp.data import load_dataset
    from clsp.data.augment import make_augment
    from clsp.methods import method_class
    from clsp.methods.data import ViewMaker
    from clsp.positives.store import PositivesStore
    from clsp.training import ResidentBatches, make_trainer

    import clsp.data.augment as augment_module

    batch, size, k = (CPU_STUDY["batch"], CPU_STUDY["size"], 1) if cpu_study else (2, 8, 8)
    total = warmup + steps + 1
    overrides = [*([] if narrow else [f"backbone.width={width}"]), *(CPU_STUDY["overrides"] if cpu_study else []), "dataset.name=digits", f"batch_size={batch}", "epochs=1", "warmup_epochs=0", "clsp.weight=1.0",
                 "clsp.positives=generated", "knn.every_n_epochs=0", "trainer.accelerator=cpu", "trainer.progress=false",
                 "trainer.checkpoint_every=1000000", "trainer.log_every=50"]
    if compile_step is not None:
        overrides.append(f"trainer.compile={str(compile_step).lower()}")
    if narrow:
        overrides += [f"backbone.arch={register_narrow_backbone()}", "projector.hidden_dim=64", "projector.out_dim=32",
                      "nnclr.predictor_hidden_dim=64", "all4one.predictor_hidden_dim=64", "all4one.ff_dim=64"]
    cfg = load_config(PretrainConfig, CONFIG_DIR / "pretrain" / f"{PRESETS[method]}.yaml", overrides)
    digits = load_dataset("digits", "train")
    reps = -(-batch * total // len(digits.images))              # the set repeated when a run needs more
    images = torch.from_numpy(digits.images).repeat(reps, 1, 1, 1)[: batch * total].contiguous()
    labels = torch.from_numpy(digits.labels).repeat(reps)[: batch * total].contiguous()
    torch.manual_seed(0)
    candidates = torch.randint(0, 256, (len(images), k, size, size, 3), dtype=torch.uint8)
    manifest = {"dataset": {"n": len(images), "image_shape": [size, size, 3]}, "generation": {"k": k, "chunk_size": len(images)}}
    store = PositivesStore(Path("generated"), manifest, None, candidates)
    data = ResidentBatches(images, labels, batch, cfg.seed)
    if hasattr(augment_module, "make_view_augments"):
        first, second = augment_module.make_view_augments(cfg.augment, size, digits.mean, digits.std)
        views = ViewMaker(first, "synthetic", store, cfg.seed, second_augment=second)
    else:
        views = ViewMaker(make_augment(cfg.augment, size, digits.mean, digits.std), "synthetic", store, cfg.seed)
    module = method_class(method)(cfg, data, views, data.steps_per_epoch(1), num_classes=10)
    module = module.to(memory_format=torch.channels_last)    # as clsp.methods.pretrain builds it
    probe = step_probe(warmup + steps, alternate_from=warmup if alternate else None)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(cfg.trainer, tmp, max_steps=total, max_epochs=1, callbacks=[probe],
                               use_distributed_sampler=False)
        trainer.fit(module, train_dataloaders=data.loader(1))
    wall = time.perf_counter() - started
    step_ms = [1e3 * (b - a) for a, b in zip(probe.starts[warmup:warmup + steps], probe.starts[warmup + 1:warmup + steps + 1])]
    phase_ms = {phase: statistics.median(times[warmup:warmup + steps]) for phase, times in probe.phase_ms.items()}
    paired = {}
    if alternate:   # steps warmup, warmup + 1, ...: compiled, eager, compiled, eager ... (pairs of neighbours)
        modes = probe.modes[warmup:warmup + steps]
        compiled = [t for t, m in zip(step_ms, modes) if m == "compiled"]
        eager = [t for t, m in zip(step_ms, modes) if m == "eager"]
        ratios = [c / e for c, e in zip(compiled, eager)]
        paired = {"alternating_ms_compiled_median": statistics.median(compiled),
                  "alternating_ms_eager_median": statistics.median(eager),
                  "alternating_ratio_compiled_over_eager": {"median": statistics.median(ratios), "min": min(ratios),
                                                            "max": max(ratios), "pairs": len(ratios)}}
    calls, ops = probe.counter.counts()
    return {
        "method": method, "preset": PRESETS[method], "backbone": cfg.backbone.arch, "width": cfg.backbone.width,
        "batch": batch, "image_size": size, "optimizer": cfg.optimizer,
        "parameters": sum(p.numel() for p in module.parameters()), "compiled_step": _compiled(module),
        "aten_calls_per_step": sum(calls.values()), "aten_calls_by_phase": calls,
        "top_ops": dict(ops.most_common(12)),
        "ms_per_step_median": statistics.median(step_ms), "ms_per_step_min": min(step_ms), "ms_per_step_max": max(step_ms),
        "ms_by_phase_median": phase_ms,
        "timed_steps": steps, "warmup_steps": warmup, "wall_seconds_incl_startup": wall, **paired,
    }


def _compiled(module) -> bool:
    return bool(getattr(module, "compiled_step", False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after --warmup untimed ones)")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--compile", choices=["auto", "true", "false"], default="auto",
                        help="the compiled step: auto = the config's default (on CUDA only), true, false")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1: host overhead, not parallelism)")
    parser.add_argument("--backbone", choices=["both", "resnet18", "narrow"], default="both",
                        help="ResNet-18, or its narrow copy (4-32 channels, heads of 64) that leaves only the host's work")
    parser.add_argument("--width", type=int, default=None,
                        help="ResNet-18's width (channels of its first stage): 64, the presets' network, by default; "
                             "32 with --cpu-study")
    parser.add_argument("--cpu-study", action="store_true",
                        help="the CPU study's sizes: width 32 (unless --width), 64 px stem, heads 512/128, batch 200, 16 px")
    parser.add_argument("--alternate", action="store_true",
                        help="with --compile true: alternate compiled and eager steps and report both and their ratio")
    parser.add_argument("--label", default="", help="a word for the result file, e.g. before / after")
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/step-overhead[-LABEL]-<device>-<date>.json")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    compile_step = None if args.compile == "auto" else args.compile == "true"
    args.widths_narrow = {"both": [False, True], "resnet18": [False], "narrow": [True]}[args.backbone]
    if args.alternate and compile_step is not True:
        parser.error("--alternate times the compiled step against the eager one: give --compile true")
    width = args.width or (32 if args.cpu_study else 64)
    results = [run_method(m, args.steps, args.warmup, compile_step, narrow, args.alternate, width, args.cpu_study)
               for narrow in args.widths_narrow for m in args.methods]
    sizes = "the CPU study's sizes (batch 200, 16 px)" if args.cpu_study else "batch 2, 8 px"
    result = stamp({"benchmark": f"step overhead: one CLSP pretraining step at {sizes}, per method, "
                                 f"ResNet-18 at width {width} and its narrow copy", "width": width,
                    "cpu_study": args.cpu_study,
                    "device": device_name("cpu"), "torch": torch.__version__, "label": args.label,
                    "load_average_1min": os.getloadavg()[0], "cpus": len(os.sched_getaffinity(0)),
                    "goal": "issue 19: CLSP-SimCLR <= 15 ms and < 1000 aten calls per step (compiled step, CPU, "
                            "narrow); issue 29: CLSP-SimCLR <= 60 ms, CLSP-MoCo <= 80 ms (eager, width 64)",
                    "results": results})
    for r in results:
        phases = ", ".join(f"{k} {v:.0f}" for k, v in r["ms_by_phase_median"].items())
        print(f"{r['method']:8s} {r['backbone']:16s} {r['aten_calls_per_step']:6d} aten calls/step {r['aten_calls_by_phase']}  "
              f"{r['ms_per_step_median']:7.1f} ms/step (min {r['ms_per_step_min']:.1f}, max {r['ms_per_step_max']:.1f}; "
              f"{phases}){'  compiled' if r['compiled_step'] else ''}")
        if "alternating_ratio_compiled_over_eager" in r:
            ratio = r["alternating_ratio_compiled_over_eager"]
            print(f"{'':8s} alternating: compiled {r['alternating_ms_compiled_median']:.1f} ms, eager "
                  f"{r['alternating_ms_eager_median']:.1f} ms; compiled/eager median {ratio['median']:.2f} "
                  f"(min {ratio['min']:.2f}, max {ratio['max']:.2f}, {ratio['pairs']} pairs)")
    print(json.dumps([{k: r[k] for k in ("method", "backbone", "top_ops")} for r in results]))
    if args.record:
        name = "step-overhead" + (f"-{args.label}" if args.label else "")
        print(f"recorded {record(name, result, args.results, device='cpu')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
