"""`clsp pipeline`: every stage in order, in one run directory, resumable at any point.

    1 diffusion   train an unconditional DDPM on the training split (or use `model_dir`)
    2 synthesis   K interpolated candidates per training image -> the positives store
      figures     anchors beside their candidates; the w sweep
    3 pretrain    each method x variant (base | clsp | aug)
    4 eval        kNN, linear, t-SNE, hardness, transfer of each encoder
    5 report      report.html

The pipeline composes each stage's own config dataclass from one PipelineConfig and calls the stage's
library function (on several devices, each training stage runs as its own `clsp` command instead, so
that Lightning can start one process per device: see Pipeline._training). Before a stage runs, the pipeline computes the
fingerprint of its config and of its inputs (the dataset's content, the upstream outputs' hashes);
a stage whose record in RUN/stages/ holds that fingerprint is skipped. A stage that was interrupted
has no record and is run again: every stage function resumes its own work (checkpoints, store
chunks), so killing the pipeline at any point and starting it again finishes the same work.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from clsp.config import check, check_choice, check_positive, field, to_dict
from clsp.data.config import DatasetConfig
from clsp.diffusion.sampler import SamplerConfig
from clsp.diffusion.train import DiffusionTrainConfig
from clsp.errors import ConfigError, UserError
from clsp.eval.linear import LinearProbeConfig
from clsp.methods.pretrain import METHOD_NAMES, PretrainConfig
from clsp.report.html import VARIANT_SUFFIX, run_name
from clsp.report.paper import PAPER_RUNS
from clsp.training import TrainerConfig

log = logging.getLogger("clsp.pipeline")

VARIANTS = ("base",) + tuple(VARIANT_SUFFIX)  # base | clsp | aug


@dataclass
class SynthesisConfig:
    """Stage 2; the model, the dataset and the store's path come from the pipeline."""

    k: int = 8                                    # candidates per training image
    sampler: SamplerConfig = field(SamplerConfig)  # sampler, steps, eta, w (0.1: the paper), batch_size, ...
    seed: int = 0
    chunk_size: int = 512                         # images per store chunk (the unit of resume)

    def __post_init__(self) -> None:
        check_positive(self.k, "synthesis.k")
        check_positive(self.chunk_size, "synthesis.chunk_size")


@dataclass
class EvalConfig:
    """Stage 4: which evaluations run on each encoder, and their settings."""

    train_split: Optional[str] = None             # the labelled split probes train on (None: dataset.train_split;
                                                  # STL-10 pretrains on unlabeled and probes on train)
    knn: bool = True
    knn_temperature: float = 0.07
    linear: bool = True
    linear_probe: LinearProbeConfig = field(LinearProbeConfig)  # the paper's protocol by default (100 epochs)
    embed: bool = True                            # t-SNE of test features
    embed_n: int = 2000
    hardness: bool = True                         # similarity of augmented / NN / synthetic / random positives
    hardness_n: int = 1000
    transfer: List[str] = field(list)             # downstream sets, e.g. [cifar10, cifar100, pets, ...]
    transfer_root: Optional[str] = None           # where the downstream sets are (None: the registry's defaults)
    skip_missing_transfer: bool = False           # report a missing downstream set as missing instead of failing
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive(self.embed_n, "eval.embed_n")
        check_positive(self.hardness_n, "eval.hardness_n")


@dataclass
class PipelineConfig:
    dataset: DatasetConfig = field(DatasetConfig)
    out_dir: str = "runs/demo"
    paper: str = ""                               # a paper preset (cifar10 ...): the report shows the paper's numbers
    # Stage 1. The pipeline sets diffusion.dataset, .out_dir and .trainer from its own sections.
    diffusion: DiffusionTrainConfig = field(DiffusionTrainConfig)
    model_dir: Optional[str] = None               # a local diffusers model to use instead of training one
    synthesis: SynthesisConfig = field(SynthesisConfig)
    w_sweep: List[float] = field(lambda: [0.0, 0.1, 0.3, 0.5, 1.0])  # rows of figures/w_sweep.png
    figure_anchors: int = 8                       # anchors in figures/anchors.png (and 4 of them in the sweep)
    methods: List[str] = field(lambda: ["simclr", "moco"])
    variants: List[str] = field(lambda: ["base", "clsp"])  # base | clsp | aug (the third-real-view control)
    # Stage 3, shared by every run; pretrain.dataset, .out_dir, .trainer and .clsp.positives are set here.
    pretrain: PretrainConfig = field(PretrainConfig)
    # Per method: PretrainConfig keys that differ, e.g. {moco: {lr: 0.3, batch_size: 512, clsp: {weight: 0.5}}}.
    method_overrides: Dict[str, Any] = field(dict)
    eval: EvalConfig = field(EvalConfig)
    trainer: TrainerConfig = field(TrainerConfig)  # every training stage's trainer section
    report: bool = True

    def __post_init__(self) -> None:
        check(len(self.methods) > 0, "methods", "must name at least one method")
        for m in self.methods:
            check_choice(m, "methods", METHOD_NAMES)
        check(len(self.variants) > 0, "variants", "must name at least one of base, clsp, aug")
        for v in self.variants:
            check_choice(v, "variants", VARIANTS)
        for m in self.method_overrides:
            check_choice(m, "method_overrides", self.methods)
        check_choice(self.paper, "paper", ("",) + PAPER_RUNS)
        check(all(0.0 <= w <= 1.0 for w in self.w_sweep), "w_sweep", f"values must be in [0, 1], got {self.w_sweep}")
        check_positive(self.figure_anchors, "figure_anchors")
        check(bool(self.out_dir), "out_dir", "must name the run directory")
        # The stage sections' dataset, trainer and out_dir are the pipeline's: record them as such.
        self.diffusion = dataclasses.replace(self.diffusion, dataset=self.dataset, trainer=self.trainer,
                                             out_dir=str(Path(self.out_dir) / "diffusion"))
        self.pretrain = dataclasses.replace(self.pretrain, dataset=self.dataset, trainer=self.trainer,
                                            out_dir=str(Path(self.out_dir) / "pretrain"))
        check(self.trainer.num_nodes == 1, "trainer.num_nodes",
              "the pipeline runs on one node (any number of devices); on several nodes run the stage commands "
              "(clsp diffusion train, torchrun ... clsp synthesize, clsp pretrain) on every node with trainer.num_nodes")

    @property
    def needs_positives(self) -> bool:
        """Synthesis is needed for the clsp variant and for the hardness evaluation."""
        return "clsp" in self.variants or self.eval.hardness


# -- composing each stage's config ------------------------------------------------------------------

def diffusion_config(cfg: PipelineConfig, run: Path) -> DiffusionTrainConfig:
    return dataclasses.replace(cfg.diffusion, dataset=cfg.dataset, out_dir=str(run / "diffusion"), trainer=cfg.trainer)


def synthesize_config(cfg: PipelineConfig, model_dir: Path, store: Path):
    from clsp.positives.synthesize import SynthesizeConfig

    s = cfg.synthesis
    return SynthesizeConfig(model=str(model_dir), dataset=cfg.dataset, split=cfg.dataset.train_split, k=s.k,
                            sampler=s.sampler, seed=s.seed, chunk_size=s.chunk_size, out=str(store),
                            accelerator=cfg.trainer.accelerator, progress=cfg.trainer.progress)


def pretrain_config(cfg: PipelineConfig, method: str, variant: str, run: Path, store: Path) -> PretrainConfig:
    """The shared pretrain section <- the method's overrides <- the variant <- what the pipeline owns."""
    from omegaconf import OmegaConf

    from clsp.config import load_config

    variant_layer = {"base": {"clsp": {"weight": 0.0, "positives": None}},
                     "clsp": {"clsp": {"positives": str(store), "third_view": "synthetic"}},
                     "aug": {"clsp": {"positives": None, "third_view": "augment"}}}[variant]
    owned = {"method": method, "dataset": to_dict(cfg.dataset), "trainer": to_dict(cfg.trainer),
             "out_dir": str(run / "pretrain" / run_name(method, variant))}
    layers = [to_dict(cfg.pretrain), cfg.method_overrides.get(method) or {}, variant_layer, owned]
    merged = OmegaConf.to_container(OmegaConf.merge(*[OmegaConf.create(layer) for layer in layers]))
    try:
        pre = load_config(PretrainConfig, extra=merged)  # type: ignore[arg-type]
    except ConfigError as e:
        raise ConfigError(f"pretraining {run_name(method, variant)} (pretrain + method_overrides.{method}): {e}") from None
    if variant != "base" and pre.clsp.weight <= 0:
        raise ConfigError(f"variant '{variant}' of {method} needs a CLSP weight > 0: set pretrain.clsp.weight or "
                          f"method_overrides.{method}.clsp.weight (the paper: 1.0 SimCLR, 0.5 MoCo on CIFAR-10)")
    return pre


# -- stage records ----------------------------------------------------------------------------------

@dataclass
class Stage:
    name: str                                    # e.g. "diffusion", "pretrain/simclr-clsp", "eval/moco/knn"
    config: Any                                  # the stage's config (dataclass or dict)
    inputs: Callable[[], Dict[str, str]]         # fingerprints of what it reads, taken just before it runs
    run: Callable[[], Any]


class StageRecords:
    """RUN/stages/<stage>.json: the fingerprint a completed stage was made from, and RUN/timings.json."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.dir = run / "stages"

    def _path(self, name: str) -> Path:
        return self.dir / (name.replace("/", "__") + ".json")

    def is_complete(self, name: str, fingerprint: str) -> bool:
        from clsp.io import read_json

        path = self._path(name)
        try:
            return path.is_file() and read_json(path).get("fingerprint") == fingerprint
        except (OSError, ValueError):
            return False

    def complete(self, name: str, fingerprint: str, seconds: float, cpu_seconds: float) -> None:
        from clsp.io import read_json, write_json_atomic

        finished = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        write_json_atomic(self._path(name), {"stage": name, "fingerprint": fingerprint, "seconds": seconds,
                                             "finished_at": finished})
        timings_path = self.run / "timings.json"
        timings = read_json(timings_path) if timings_path.is_file() else {"stages": {}}
        timings["stages"][name] = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
                                   "finished_at": finished, "device": _device_name()}
        timings["total_seconds"] = round(sum(s["seconds"] for s in timings["stages"].values()), 2)
        write_json_atomic(timings_path, timings)


def cpu_time() -> float:
    """CPU seconds used so far by this process (all threads) and by its finished child processes: on a
    shared machine, what a stage cost independently of what else was running."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


# -- the pipeline -----------------------------------------------------------------------------------

class Pipeline:
    """Plans the stages of one PipelineConfig (all configs validated before any work) and runs them."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self.run = Path(cfg.out_dir).resolve()
        self.store = self.run / "positives"
        self.model_dir = Path(cfg.model_dir).resolve() if cfg.model_dir else self.run / "diffusion" / "model"
        self._train_set = None
        self.diffusion = None if cfg.model_dir else diffusion_config(cfg, self.run)
        self.runs = {run_name(m, v): pretrain_config(cfg, m, v, self.run, self.store)
                     for m in cfg.methods for v in cfg.variants}
        from clsp.methods.pretrain import validate
        from clsp.training import world_size

        for pre in self.runs.values():
            validate(pre, world_size(pre.trainer))  # queue sizes vs the global batch, before any work
        if cfg.model_dir and not self.model_dir.is_dir():
            raise UserError(f"model_dir {cfg.model_dir} is not a directory; give a local diffusers model "
                            "(unet/ + scheduler/, or a flat one), or leave model_dir unset to train one")

    # fingerprints of inputs -------------------------------------------------------------------------
    def dataset_fingerprint(self) -> str:
        if self._train_set is None:
            from clsp.data.config import load_split

            self._train_set = load_split(self.cfg.dataset, self.cfg.dataset.train_split)
        return self._train_set.fingerprint

    def model_hash(self) -> str:
        from clsp.io import hash_directory

        return hash_directory(self.model_dir)

    def store_hash(self) -> str:
        from clsp.io import hash_json
        from clsp.positives.store import identity, read_manifest

        manifest = read_manifest(self.store)
        return hash_json(identity(manifest)) if manifest else "absent"

    def encoder_hash(self, name: str) -> str:
        from clsp.eval.metrics import file_sha256
        from clsp.models.encoder import ENCODER_FILE

        path = self.run / "pretrain" / name / ENCODER_FILE
        return file_sha256(path) if path.is_file() else "absent"

    # the stages -----------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        cfg, out = self.cfg, []
        if cfg.needs_positives and self.diffusion is not None:
            from clsp.diffusion.train import train_diffusion

            out.append(Stage("diffusion", self.diffusion, lambda: {"dataset": self.dataset_fingerprint()},
                             self._training("diffusion", ["diffusion", "train"], self.diffusion, train_diffusion)))
        if cfg.needs_positives:
            from clsp.positives.synthesize import synthesize

            synth = synthesize_config(cfg, self.model_dir, self.store)
            out.append(Stage("synthesis", synth, lambda: {"dataset": self.dataset_fingerprint(), "model": self.model_hash()},
                             self._training("synthesis", ["synthesize"], synth, synthesize, torchrun=True)))
            figures = {"anchors": cfg.figure_anchors, "w_sweep": list(cfg.w_sweep), "synthesis": to_dict(cfg.synthesis)}
            out.append(Stage("figures", figures, lambda: {"store": self.store_hash(), "model": self.model_hash()},
                             self.draw_figures))
        if self.runs:
            from clsp.methods.pretrain import pretrain
        for name, pre in self.runs.items():
            out.append(Stage(f"pretrain/{name}", pre, self._pretrain_inputs(pre),
                             self._training(f"pretrain/{name}", ["pretrain"], pre, pretrain)))
        for name in self.runs:
            out += self.eval_stages(name)
        return out

    def _pretrain_inputs(self, pre: PretrainConfig) -> Callable[[], Dict[str, str]]:
        def inputs() -> Dict[str, str]:
            found = {"dataset": self.dataset_fingerprint()}
            if pre.third_view == "synthetic":
                found["positives"] = self.store_hash()
            return found
        return inputs

    def _training(self, name: str, command: list[str], config: Any, function: Callable[[Any], Any],
                  torchrun: bool = False) -> Callable[[], Any]:
        """Run a stage in this process on one device. On several devices, run it as its own `clsp` command
        instead: Lightning starts one process per device by re-running the command it runs in, and that
        command must be the stage's, not the whole pipeline's (synthesis: torchrun starts the processes)."""
        from clsp.training import world_size

        world = world_size(self.cfg.trainer)
        if world == 1:
            return lambda: function(config)

        def launch() -> None:
            import subprocess
            import sys

            from clsp.config import to_yaml
            from clsp.io import write_text_atomic

            resolved = self.run / "stages" / (name.replace("/", "__") + ".yaml")
            write_text_atomic(resolved, to_yaml(config))
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}"] \
                if torchrun else [sys.executable]
            argv = [*launcher, "-m", "clsp", *command, "--config", str(resolved)]
            log.info(f"pipeline: {name} on {world} devices: {' '.join(argv)}")
            code = subprocess.run(argv).returncode
            if code != 0:
                raise UserError(f"stage {name} failed (exit code {code}; its messages are above); "
                                "run the pipeline again to resume it")
        return launch

    def eval_stages(self, name: str) -> list[Stage]:
        cfg, ev = self.cfg, self.cfg.eval
        encoder = self.run / "pretrain" / name
        out_dir = self.run / "eval" / name
        data = dataclasses.replace(cfg.dataset, train_split=ev.train_split or cfg.dataset.train_split)
        stages = []

        def inputs(with_store: bool = False) -> Callable[[], Dict[str, str]]:
            return lambda: {"encoder": self.encoder_hash(name), **({"positives": self.store_hash()} if with_store else {})}

        if ev.knn:
            from clsp.eval.knn import knn_eval

            stages.append(Stage(f"eval/{name}/knn", {"dataset": to_dict(data), "temperature": ev.knn_temperature}, inputs(),
                                lambda: knn_eval(encoder, data, out_dir / "knn", temperature=ev.knn_temperature)))
        if ev.linear:
            from clsp.eval.linear import linear_eval

            stages.append(Stage(f"eval/{name}/linear", {"dataset": to_dict(data), "probe": to_dict(ev.linear_probe)}, inputs(),
                                lambda: linear_eval(encoder, data, out_dir / "linear", ev.linear_probe)))
        if ev.embed:
            from clsp.eval.embed import embed_plot

            stages.append(Stage(f"eval/{name}/embed", {"dataset": to_dict(data), "n": ev.embed_n, "seed": ev.seed}, inputs(),
                                lambda: embed_plot(encoder, data, out_dir / "embed", n=ev.embed_n, seed=ev.seed)))
        if ev.hardness:
            from clsp.eval.hardness import hardness_eval

            stages.append(Stage(f"eval/{name}/hardness", {"dataset": to_dict(cfg.dataset), "n": ev.hardness_n, "seed": ev.seed},
                                inputs(with_store=True),
                                lambda: hardness_eval(encoder, cfg.dataset, self.store, out_dir / "hardness", n=ev.hardness_n,
                                                      seed=ev.seed)))
        if ev.transfer:
            from clsp.eval.transfer import transfer_eval

            stages.append(Stage(f"eval/{name}/transfer", {"sets": list(ev.transfer), "root": ev.transfer_root,
                                                          "probe": to_dict(ev.linear_probe)}, inputs(),
                                lambda: transfer_eval(encoder, list(ev.transfer), out_dir / "transfer", root=ev.transfer_root,
                                                      probe_cfg=ev.linear_probe, skip_missing=ev.skip_missing_transfer)))
        return stages

    def draw_figures(self) -> None:
        """figures/anchors.png (the first anchors beside their stored candidates) and figures/w_sweep.png
        (a few anchors sampled at each w of w_sweep with one seed, so the rows differ only by w)."""
        import torch

        from clsp import grids
        from clsp.diffusion.model import load_model
        from clsp.diffusion.sampler import generate_positives
        from clsp.positives.store import PositivesStore

        self.dataset_fingerprint()
        train, n = self._train_set, min(self.cfg.figure_anchors, len(self._train_set))
        store = PositivesStore.open(self.store, train)
        indices = torch.arange(n)
        anchors = torch.from_numpy(train.images[:n])
        grids.save_png(self.run / "figures" / "anchors.png", grids.candidates_grid(anchors, store.candidates(indices)))
        if not self.cfg.w_sweep:
            return
        unet, scheduler_config = load_model(self.model_dir)
        device = "cuda" if torch.cuda.is_available() and self.cfg.trainer.accelerator != "cpu" else "cpu"
        unet = unet.to(device).eval()
        few = anchors[: min(4, n)]
        k = min(self.cfg.synthesis.k, 4)
        sweep = [(w, generate_positives(unet, scheduler_config, few, k, dataclasses.replace(self.cfg.synthesis.sampler, w=w),
                                        seed=self.cfg.synthesis.seed, device=device)) for w in self.cfg.w_sweep]
        title = f"interpolation weight w ({self.cfg.synthesis.sampler.sampler}, {self.cfg.synthesis.sampler.steps} steps)"
        grids.save_png(self.run / "figures" / "w_sweep.png", grids.w_sweep_image(few, sweep, title=title))

    def check_data(self) -> None:
        """Diffusion training needs the training images in memory; a streamed set needs model_dir."""
        from clsp.data.registry import ImageSet

        self.dataset_fingerprint()
        if self.diffusion is not None and not isinstance(self._train_set, ImageSet):
            raise UserError(f"dataset {self.cfg.dataset.name} streams from disk, so the pipeline cannot train a diffusion "
                            "model on it; give a trained local diffusers model with model_dir=DIR")

    def execute(self) -> Path:
        from clsp import rundir
        from clsp.rundir import fingerprint

        stages = self.stages()
        self.check_data()
        rundir.start(self.run, self.cfg)
        records = StageRecords(self.run)
        log.info(f"pipeline: {len(stages)} stages -> {self.run}")
        for i, stage in enumerate(stages, 1):
            key = fingerprint(stage.config, stage.inputs())
            if records.is_complete(stage.name, key):
                log.info(f"pipeline: [{i}/{len(stages)}] {stage.name}: complete for the same inputs, skipped")
                continue
            log.info(f"pipeline: [{i}/{len(stages)}] {stage.name}: running")
            started, cpu_started = time.perf_counter(), cpu_time()
            stage.run()
            seconds = time.perf_counter() - started
            records.complete(stage.name, key, seconds, cpu_time() - cpu_started)
            log.info(f"pipeline: [{i}/{len(stages)}] {stage.name}: done in {seconds:.1f} s")
        report = None
        if self.cfg.report:
            from clsp.report import build_report

            started = time.perf_counter()
            report = build_report(self.run)
            log.info(f"pipeline: report written in {time.perf_counter() - started:.1f} s")
        rundir.finish(self.run, self.cfg, {}, {"report": str(report) if report else None})
        return report or self.run


def run_pipeline(cfg: PipelineConfig) -> Path:
    """Run (or finish) every stage of `cfg` in cfg.out_dir; returns the report's path (the run directory
    when report is false)."""
    from clsp.training import apply_threads

    apply_threads(cfg.trainer)
    return Pipeline(cfg).execute()


# -- CLI --------------------------------------------------------------------------------------------

def register(subparsers) -> None:
    from clsp.cli import add_config_arguments

    parser = subparsers.add_parser(
        "pipeline", help="run every stage: diffusion -> positives -> pretraining -> evaluation -> report",
        description="Run the whole method in one run directory: train the diffusion model (or use model_dir), "
                    "synthesize positives, pretrain each method with and without CLSP, evaluate, write report.html. "
                    "Run it again to resume: completed stages are skipped.")
    add_config_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from clsp.config import load_config

    cfg = load_config(PipelineConfig, args.config, args.overrides)
    result = run_pipeline(cfg)
    if result.suffix == ".html":
        print(f"report: {result}")
        print(f"open it with: xdg-open {result}")
    else:
        print(f"run directory: {result}")
    return 0
