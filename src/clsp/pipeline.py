"""`clsp pipeline`: every stage in order, in one run directory, resumable at any point.

    1 diffusion   train an unconditional DDPM on the training split (or use `model_dir`)
    2 synthesis   K interpolated candidates per training image -> the positives store (one more store per
                  value of a swept w or K)
      figures     anchors beside their candidates; the w sweep
      positives   how good the candidates are (`clsp eval positives`: a reference classifier's verdict)
    3 pretrain    each method x variant (base | clsp | aug | oracle) x seed, each swept CLSP value, and the untrained
                  encoder of each seed (the "no pretraining" floor)
    4 eval        kNN, linear, t-SNE, hardness, transfer of each encoder
    5 report      report.html

Run names, stores and every path of the run directory come from `clsp.layout` (the report reads the same plan).
Each stage names the stages whose outputs it reads (Stage.after): diffusion -> each store's synthesis -> its
figures and positives evaluation; a CLSP run after its store (the others after nothing); an encoder's
evaluations after its pretraining; the report after everything. With `jobs: N` (N > 1), N stages whose
inputs are ready run side by side in N worker processes (clsp.jobs); with 1 they run one by one, in order.

The pipeline composes each stage's own config dataclass from one PipelineConfig and calls the stage's
library function (on several devices, each training stage runs as its own `clsp` command instead, so
that Lightning can start one process per device: see Pipeline._training). Before a stage runs, the pipeline computes the
fingerprint of its config and of its inputs (the dataset's content, the upstream outputs' hashes);
a stage whose record in RUN/stages/ holds that fingerprint is skipped. A stage that was interrupted
has no record and is run again: every stage function resumes its own work (checkpoints, store
chunks), so killing the pipeline at any point and starting it again finishes the same work.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from clsp.config import added_section, check, check_choice, check_positive, field, hashed_dict, to_dict
from clsp.data.config import DatasetConfig
from clsp.diffusion.config import DiffusionTrainConfig, SamplerConfig
from clsp.errors import ConfigError, UserError
from clsp.eval.config import LinearProbeConfig
from clsp.layout import STORE_SWEEPS, SWEEPABLE, VARIANT_SUFFIX, RunLayout, RunSpec, plan_runs, store_name
from clsp.methods import METHODS
from clsp.methods.config import PretrainConfig
from clsp.positives.config import StrengthConfig
from clsp.report.paper import PAPER_RUNS
from clsp.training_config import TrainerConfig

log = logging.getLogger("clsp.pipeline")

VARIANTS = ("base",) + tuple(VARIANT_SUFFIX)  # base | clsp | aug | oracle
LABELLED_EVALS = ("knn", "linear", "embed")      # the evaluations that need labelled train / test splits
EVAL_NAMES = {"knn": "kNN", "linear": "linear probe", "embed": "t-SNE", "positives": "positives evaluation"}


@dataclass
class SynthesisConfig:
    """Stage 2; the model, the dataset and the store's path come from the pipeline."""

    k: int = 8                                    # candidates per training image
    sampler: SamplerConfig = field(SamplerConfig)  # sampler, steps, eta, w (0.1: the paper), start, batch_size, ...
    strength: StrengthConfig = added_section(StrengthConfig)  # per-candidate start (grid, floor, space); off by default
    seed: int = 0
    chunk_size: int = 512                         # images per store chunk (the unit of resume)

    def __post_init__(self) -> None:
        check_positive(self.k, "synthesis.k")
        check_positive(self.chunk_size, "synthesis.chunk_size")


@dataclass
class EvalConfig:
    """Stage 4: which evaluations run on each encoder, and their settings."""

    dataset: Optional[DatasetConfig] = None       # the labelled set kNN, linear and t-SNE use (None: the pipeline's
                                                  # dataset); name one for a flat folder, e.g. eval.dataset.name=...
    train_split: Optional[str] = None             # the labelled split probes train on (None: the set's train_split;
                                                  # STL-10 pretrains on unlabeled and probes on train)
    knn: bool = True
    knn_temperature: float = 0.07
    linear: bool = True
    linear_probe: LinearProbeConfig = field(LinearProbeConfig)  # the paper's protocol by default (100 epochs)
    embed: bool = True                            # t-SNE of test features
    embed_n: int = 2000
    hardness: bool = True                         # similarity of augmented / NN / synthetic / random positives
    hardness_n: int = 1000
    positives: bool = True                        # `clsp eval positives` on each store (needs labels)
    positives_n: int = 1000                       # anchors judged per store
    positives_sweep_n: int = 100                  # anchors per w of w_sweep, sampled afresh
    positives_sweep_start: List[float] = field(list)    # partial-noise starts the main store's evaluation samples afresh
    positives_sweep_start_w: List[float] = field(list)  # the w of each start curve ([] = the synthesis w)
    positives_sweep_floor: List[float] = field(list)    # label-free floors of the per-candidate start to sample afresh
    transfer: List[str] = field(list)             # downstream sets, e.g. [cifar10, cifar100, pets, ...]
    transfer_root: Optional[str] = None           # where the downstream sets are (None: the registry's defaults)
    skip_missing_transfer: bool = False           # report a missing downstream set as missing instead of failing
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive(self.embed_n, "eval.embed_n")
        check_positive(self.hardness_n, "eval.hardness_n")
        check_positive(self.positives_n, "eval.positives_n")
        check_positive(self.positives_sweep_n, "eval.positives_sweep_n")


@dataclass
class SweepConfig:
    """Extra CLSP runs, one per value of one setting (the paper's ablations), each a real training run.

    setting w, k or start: one positives store per value (positives-w0.3/, positives-start0.4/), and per value a
    CLSP run of each swept method; setting weight: the CLSP weight lambda, no store of its own. A value equal to the main
    setting is the main CLSP run itself."""

    setting: str = ""                             # "" (no sweep) | w | k | weight | start
    values: List[float] = field(list)
    methods: List[str] = field(list)              # methods whose CLSP run is swept ([] = every method)
    seeds: List[int] = field(list)                # seeds of the swept runs ([] = the pipeline's seeds)

    def __post_init__(self) -> None:
        check_choice(self.setting, "sweep.setting", ("",) + SWEEPABLE)
        check(not self.setting or len(self.values) > 0, "sweep.values", f"a {self.setting} sweep needs values")
        if self.setting == "w":
            check(all(0.0 <= v <= 1.0 for v in self.values), "sweep.values", f"w values must be in [0, 1], got {self.values}")
        if self.setting == "k":
            check(all(v >= 1 and float(v).is_integer() for v in self.values), "sweep.values", f"K values must be whole numbers >= 1, got {self.values}")
        if self.setting == "start":
            check(all(0.0 < v <= 1.0 for v in self.values), "sweep.values", f"starts must be in (0, 1], got {self.values}")
        if self.setting == "weight":
            check(all(v > 0 for v in self.values), "sweep.values", f"CLSP weights must be > 0, got {self.values}")


@dataclass
class PipelineConfig:
    dataset: DatasetConfig = field(DatasetConfig)
    out_dir: str = "runs/demo"
    paper: str = ""                               # a paper preset (cifar10 ...): the report shows the paper's numbers
    note: str = ""                                # one line the report shows first: what this run can and cannot show
    # Stage 1. The pipeline sets diffusion.dataset, .out_dir and .trainer from its own sections.
    diffusion: DiffusionTrainConfig = field(DiffusionTrainConfig)
    model_dir: Optional[str] = None               # a local diffusers model to use instead of training one
    synthesis: SynthesisConfig = field(SynthesisConfig)
    w_sweep: List[float] = field(lambda: [0.0, 0.1, 0.3, 0.5, 1.0])  # rows of figures/w_sweep.png
    figure_anchors: int = 8                       # anchors in figures/anchors.png (and 4 of them in the sweep)
    methods: List[str] = field(lambda: ["simclr", "moco"])
    variants: List[str] = field(lambda: ["base", "clsp"])  # base | clsp | aug (the third-real-view control) |
                                                  # oracle (a real class-mate as the positive: labels, an upper bound)
    seeds: List[int] = field(lambda: [0])         # every pretraining run (and its evaluations) once per seed
    sweep: SweepConfig = field(SweepConfig)       # extra CLSP runs over w, K or the CLSP weight
    floor: bool = True                            # evaluate the untrained encoder of each seed ("no pretraining")
    # Stage 3, shared by every run; pretrain.dataset, .out_dir, .trainer and .clsp.positives are set here.
    pretrain: PretrainConfig = field(PretrainConfig)
    # Per method: PretrainConfig keys that differ, e.g. {moco: {lr: 0.3, batch_size: 512, clsp: {weight: 0.5}}}.
    method_overrides: Dict[str, Any] = field(dict)
    eval: EvalConfig = field(EvalConfig)
    trainer: TrainerConfig = field(TrainerConfig)  # every training stage's trainer section
    report: bool = True
    jobs: int = 1                                 # stages run side by side when their inputs are ready, each with
                                                  # its share of the CPU threads, or its own GPUs (clsp.jobs)

    def __post_init__(self) -> None:
        check(len(self.methods) > 0, "methods", "must name at least one method")
        for m in self.methods:
            check_choice(m, "methods", METHODS)
        check(len(self.variants) > 0, "variants", "must name at least one of base, clsp, aug, oracle")
        for v in self.variants:
            check_choice(v, "variants", VARIANTS)
        for m in self.method_overrides:  # a method that is not run keeps its overrides (checked in Pipeline)
            check_choice(m, "method_overrides", METHODS)
        check(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds), "seeds",
              f"must name one or more distinct seeds, got {self.seeds}")
        check(self.pretrain.seed == 0, "pretrain.seed",
              f"the pipeline's `seeds` list sets each run's seed: write seeds=[{self.pretrain.seed}] instead")
        for m in self.sweep.methods:
            check_choice(m, "sweep.methods", self.methods)
        check(not self.sweep.setting or "clsp" in self.variants, "sweep.setting",
              "a sweep varies the CLSP run: add clsp to variants")
        check_choice(self.paper, "paper", ("",) + PAPER_RUNS)
        check(all(0.0 <= w <= 1.0 for w in self.w_sweep), "w_sweep", f"values must be in [0, 1], got {self.w_sweep}")
        check_positive(self.figure_anchors, "figure_anchors")
        check(self.jobs >= 1, "jobs", f"must be >= 1 (stages run at a time), got {self.jobs}")
        check(bool(self.out_dir), "out_dir", "must name the run directory")
        # The stage sections' dataset, trainer and out_dir are the pipeline's: record them as such.
        layout = RunLayout(Path(self.out_dir))
        self.diffusion = dataclasses.replace(self.diffusion, dataset=self.dataset, trainer=self.trainer,
                                             out_dir=str(layout.diffusion))
        self.pretrain = dataclasses.replace(self.pretrain, dataset=self.dataset, trainer=self.trainer,
                                            out_dir=str(layout.pretrain_root))
        check(self.trainer.num_nodes == 1, "trainer.num_nodes",
              "the pipeline runs on one node (any number of devices); on several nodes run the stage commands "
              "(clsp diffusion train, torchrun ... clsp synthesize, clsp pretrain) on every node with trainer.num_nodes")

    @property
    def needs_positives(self) -> bool:
        """Synthesis is needed for the clsp variant, a w, K or start sweep, and the hardness and positives evaluations."""
        return ("clsp" in self.variants or self.sweep.setting in STORE_SWEEPS or self.eval.hardness
                or self.eval.positives)

    def planned_runs(self) -> list[RunSpec]:
        """Every encoder of this pipeline (clsp.layout names them)."""
        main = {"w": self.synthesis.sampler.w, "k": self.synthesis.k, "weight": self.pretrain.clsp.weight,
                "start": self.synthesis.sampler.start}
        return plan_runs(self.methods, self.variants, self.seeds, self.sweep.setting, self.sweep.values,
                         self.sweep.methods, self.sweep.seeds, main, self.floor)

    def stores(self) -> list[Optional[tuple[str, float]]]:
        """The positives stores: the main one (None) and one per swept w or K value that differs from it."""
        out: list[Optional[tuple[str, float]]] = [None]
        main = {"w": self.synthesis.sampler.w, "k": self.synthesis.k, "start": self.synthesis.sampler.start}
        if self.sweep.setting in main:
            out += [(self.sweep.setting, float(v)) for v in self.sweep.values if float(v) != float(main[self.sweep.setting])]
        return out


# -- composing each stage's config ------------------------------------------------------------------

def diffusion_config(cfg: PipelineConfig, run: RunLayout) -> DiffusionTrainConfig:
    return dataclasses.replace(cfg.diffusion, dataset=cfg.dataset, out_dir=str(run.diffusion), trainer=cfg.trainer)


def synthesize_config(cfg: PipelineConfig, model_dir: Path, store: Path, sweep: Optional[tuple[str, float]] = None):
    """The synthesis section, with the swept w, K or start of `sweep` when given (a swept start is fixed: the
    per-candidate rule is off in that store)."""
    from clsp.positives.synthesize import SynthesizeConfig

    s = cfg.synthesis
    sampler, k = s.sampler, s.k
    if sweep is not None and sweep[0] == "w":
        sampler = dataclasses.replace(sampler, w=sweep[1])
    if sweep is not None and sweep[0] == "k":
        k = int(sweep[1])
    strength = s.strength
    if sweep is not None and sweep[0] == "start":
        sampler, strength = dataclasses.replace(sampler, start=sweep[1]), StrengthConfig()
    return SynthesizeConfig(model=str(model_dir), dataset=cfg.dataset, split=cfg.dataset.train_split, k=k,
                            sampler=sampler, strength=strength, seed=s.seed, chunk_size=s.chunk_size, out_dir=str(store),
                            device={"gpu": "cuda"}.get(cfg.trainer.accelerator, cfg.trainer.accelerator),
                            progress=cfg.trainer.progress)


def pretrain_config(cfg: PipelineConfig, spec: RunSpec, run: RunLayout) -> PretrainConfig:
    """The shared pretrain section <- the method's overrides <- the variant <- the swept value <- what the
    pipeline owns (dataset, trainer, seed, out_dir, the store)."""
    from omegaconf import OmegaConf

    from clsp.config import load_config

    method, variant = spec.method, spec.variant
    store = str(run.store(spec.store)) if spec.store else None
    variant_layer = {"base": {"clsp": {"weight": 0.0, "positives": None}},
                     "clsp": {"clsp": {"positives": store, "third_view": "synthetic"}},
                     "aug": {"clsp": {"positives": None, "third_view": "augment"}},
                     "oracle": {"clsp": {"positives": None, "third_view": "oracle"}}}[variant]
    sweep_layer = {"clsp": {"weight": spec.sweep[1]}} if spec.sweep is not None and spec.sweep[0] == "weight" else {}
    owned = {"method": method, "dataset": to_dict(cfg.dataset), "trainer": to_dict(cfg.trainer), "seed": spec.seed,
             "out_dir": str(run.pretrain(spec.name))}
    layers = [to_dict(cfg.pretrain), cfg.method_overrides.get(method) or {}, variant_layer, sweep_layer, owned]
    merged = OmegaConf.to_container(OmegaConf.merge(*[OmegaConf.create(layer) for layer in layers]))
    try:
        pre = load_config(PretrainConfig, extra=merged)  # type: ignore[arg-type]
    except ConfigError as e:
        raise ConfigError(f"pretraining {spec.name} (pretrain + method_overrides.{method}): {e}") from None
    if variant != "base" and pre.clsp.weight <= 0:
        raise ConfigError(f"variant '{variant}' of {method} needs a CLSP weight > 0: set pretrain.clsp.weight or "
                          f"method_overrides.{method}.clsp.weight (the paper: 1.0 SimCLR, 0.5 MoCo on CIFAR-10)")
    return pre


def floor_config(cfg: PipelineConfig, spec: RunSpec, run: RunLayout) -> PretrainConfig:
    """The untrained encoder of a seed: the first method's pretraining config, never trained."""
    first = pretrain_config(cfg, RunSpec(cfg.methods[0], "base", spec.seed), run)
    return dataclasses.replace(first, out_dir=str(run.pretrain(spec.name)))


# -- stage records ----------------------------------------------------------------------------------

@dataclass
class Stage:
    name: str                                    # e.g. "diffusion", "pretrain/simclr-clsp", "eval/moco/knn"
    config: Any                                  # the stage's config (dataclass or dict)
    inputs: Callable[[], Dict[str, str]]         # fingerprints of what it reads, taken just before it runs
    run: Callable[[], Any]
    output: Optional[Path] = None                # a file the completed stage leaves: without it the stage runs again
    after: Tuple[str, ...] = ()                  # the stages whose outputs it reads: it starts once they are complete


class StageRecords:
    """RUN/stages/<stage>.json: the fingerprint a completed stage was made from, and RUN/timings.json."""

    def __init__(self, run: Path) -> None:
        self.layout = RunLayout(run)

    def is_complete(self, name: str, fingerprint: str, output: Optional[Path] = None) -> bool:
        """The stage ran from the same inputs and its output is still there (a deleted output is remade)."""
        from clsp.rundir import record_matches

        return record_matches(self.layout.stage_record(name), fingerprint, [output] if output is not None else [])

    def complete(self, name: str, fingerprint: str, seconds: float, cpu_seconds: float) -> None:
        from clsp.io import read_json_object, write_json_atomic

        finished = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        write_json_atomic(self.layout.stage_record(name), {"stage": name, "fingerprint": fingerprint, "seconds": seconds,
                                                           "finished_at": finished})
        timings_path = self.layout.timings
        timings = read_json_object(timings_path) or {"stages": {}}
        timings["stages"][name] = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
                                   "finished_at": finished, "device": _device_name()}
        timings["total_seconds"] = round(sum(s["seconds"] for s in timings["stages"].values()), 2)
        write_json_atomic(timings_path, timings)


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


# -- the pipeline -----------------------------------------------------------------------------------

class Pipeline:
    """Plans the stages of one PipelineConfig (all configs validated before any work) and runs them."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self.layout = RunLayout(Path(cfg.out_dir).resolve())
        self.store = self.layout.store()
        from clsp.diffusion.model import resolve_model_dir

        self.model_dir = resolve_model_dir(cfg.model_dir).resolve() if cfg.model_dir else self.layout.model
        self._train_set = None
        self.diffusion = None if cfg.model_dir else diffusion_config(cfg, self.layout)
        self.specs = {spec.name: spec for spec in cfg.planned_runs()}
        self.runs = {name: (floor_config if spec.method == "none" else pretrain_config)(cfg, spec, self.layout)
                     for name, spec in self.specs.items()}
        for method in set(cfg.method_overrides) - set(cfg.methods):  # not run: its overrides must still be valid keys
            pretrain_config(cfg, RunSpec(method, "base"), self.layout)
        self.skipped_evals: Dict[str, str] = {}      # evaluation kind -> why it is not run (set by preflight)
        from clsp.methods.pretrain import validate
        from clsp.training import world_size

        for name, pre in self.runs.items():
            if self.specs[name].method != "none":
                validate(pre, world_size(pre.trainer))  # queue sizes vs the global batch, before any work

    # fingerprints of inputs -------------------------------------------------------------------------
    def dataset_fingerprint(self) -> str:
        if self._train_set is None:
            from clsp.data.config import load_split

            self._train_set = load_split(self.cfg.dataset, self.cfg.dataset.train_split)
        return self._train_set.fingerprint

    def model_hash(self) -> str:
        from clsp.io import hash_directory

        return hash_directory(self.model_dir)

    def store_hash(self, store: Path | None = None) -> str:
        from clsp.io import hash_json
        from clsp.positives.store import identity, read_manifest

        manifest = read_manifest(store or self.store)
        return hash_json(identity(manifest)) if manifest else "absent"

    def encoder_hash(self, name: str) -> str:
        from clsp.io import file_sha256

        path = self.layout.encoder(name)
        return file_sha256(path)[:16] if path.is_file() else "absent"

    # the stages -----------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        cfg, out = self.cfg, []
        if cfg.needs_positives and self.diffusion is not None:
            from clsp.diffusion.train import train_diffusion

            out.append(Stage("diffusion", self.diffusion, lambda: {"dataset": self.dataset_fingerprint()},
                             self._training("diffusion", ["diffusion", "train"], self.diffusion, train_diffusion),
                             self.layout.diffusion / "done.json"))
        if cfg.needs_positives:
            out += self.synthesis_stages()
        for name, pre in self.runs.items():
            out.append(self.pretrain_stage(name, pre))
        for name in self.runs:
            out += self.eval_stages(name)
        return out

    def synthesis_stages(self) -> list[Stage]:
        """One synthesis per store; the figures of the main store; the positives evaluation of every store."""
        from clsp.positives.store import MANIFEST
        from clsp.positives.synthesize import synthesize

        cfg, out = self.cfg, []
        model = ("diffusion",) if self.diffusion is not None else ()
        for sweep in cfg.stores():
            store = self.layout.store(store_name(sweep))
            name = synthesis_name(store.name)
            synth = synthesize_config(cfg, self.model_dir, store, sweep)
            out.append(Stage(name, synth, lambda: {"dataset": self.dataset_fingerprint(), "model": self.model_hash()},
                             self._training(name, ["synthesize"], synth, synthesize, torchrun=True), store / MANIFEST,
                             after=model))
        figures = {"anchors": cfg.figure_anchors, "w_sweep": list(cfg.w_sweep), "synthesis": hashed_dict(cfg.synthesis)}
        out.append(Stage("figures", figures, lambda: {"store": self.store_hash(), "model": self.model_hash()},
                         self.draw_figures, self.layout.figure("anchors"), after=(synthesis_name(self.store.name),)))
        if cfg.eval.positives and "positives" not in self.skipped_evals:
            for sweep in cfg.stores():
                out.append(self.positives_stage(sweep))
        return out

    def positives_stage(self, sweep: Optional[tuple[str, float]]) -> Stage:
        """`clsp eval positives` on one store; the main store's also samples the w_sweep afresh."""
        from clsp.eval.positives import PositivesEvalConfig, positives_eval

        ev, store = self.cfg.eval, self.layout.store(store_name(sweep))
        main = sweep is None
        settings = PositivesEvalConfig(n=ev.positives_n, sweep_w=list(self.cfg.w_sweep) if main else [],
                                       sweep_start=list(ev.positives_sweep_start) if main else [],
                                       sweep_start_w=list(ev.positives_sweep_start_w) if main else [],
                                       sweep_floor=list(ev.positives_sweep_floor) if main else [],
                                       strength_space=self.cfg.synthesis.strength.space,
                                       strength_grid=list(self.cfg.synthesis.strength.grid),
                                       sweep_n=ev.positives_sweep_n, seed=ev.seed)
        config = {"dataset": hashed_dict(self.cfg.dataset), **hashed_dict(settings)}
        return Stage(f"eval/{store.name}", config, lambda: {"store": self.store_hash(store), "model": self.model_hash()},
                     lambda: positives_eval(store, self.cfg.dataset, self.layout.store_evaluation(store.name), settings,
                                            model_dir=self.model_dir if settings.sweeps else None,
                                            progress=self.cfg.trainer.progress), self.layout.store_metrics(store.name),
                     after=(synthesis_name(store.name),))

    def pretrain_stage(self, name: str, pre: PretrainConfig) -> Stage:
        spec = self.specs[name]
        if spec.method == "none":
            from clsp.methods.pretrain import untrained_encoder

            return Stage(f"pretrain/{name}", {"backbone": hashed_dict(pre.backbone), "seed": pre.seed, "untrained": True},
                         lambda: {"dataset": self.dataset_fingerprint()}, lambda: untrained_encoder(pre),
                         self.layout.encoder(name))
        from clsp.methods.pretrain import pretrain

        def inputs() -> Dict[str, str]:
            found = {"dataset": self.dataset_fingerprint()}
            if pre.third_view == "synthetic":
                found["positives"] = self.store_hash(Path(pre.clsp.positives))
            return found
        return Stage(f"pretrain/{name}", pre, inputs, self._training(f"pretrain/{name}", ["pretrain"], pre, pretrain),
                     self.layout.pretrain_metrics(name),
                     after=(synthesis_name(Path(pre.clsp.positives).name),) if pre.third_view == "synthetic" else ())

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

            resolved = self.layout.stage_record(name, ".yaml")
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

    def eval_data(self) -> DatasetConfig:
        """The labelled set of kNN, linear and t-SNE (eval.dataset, else the pipeline's), with the probes' train split."""
        data = self.cfg.eval.dataset or self.cfg.dataset
        return dataclasses.replace(data, train_split=self.cfg.eval.train_split or data.train_split)

    def eval_stages(self, name: str) -> list[Stage]:
        """kNN and linear for every encoder; t-SNE, hardness and transfer for the first seed of each main run
        (the figures would repeat themselves over seeds; the floor and the swept runs are read in the tables)."""
        cfg, ev, spec = self.cfg, self.cfg.eval, self.specs[name]
        encoder = self.layout.pretrain(name)
        data = self.eval_data()
        figures = spec.method != "none" and spec.sweep is None and spec.seed == cfg.seeds[0]
        store = self.layout.store(spec.store or store_name(None))
        stages = []
        after = (f"pretrain/{name}",)                 # and the store, for hardness

        def out_dir(kind: str) -> Path:
            return self.layout.evaluation(name, kind)

        def output(kind: str) -> Path:
            return self.layout.eval_metrics(name, kind)

        def inputs(with_store: bool = False) -> Callable[[], Dict[str, str]]:
            return lambda: {"encoder": self.encoder_hash(name), **({"positives": self.store_hash(store)} if with_store else {})}

        if ev.knn and "knn" not in self.skipped_evals:
            from clsp.eval.knn import knn_eval

            stages.append(Stage(f"eval/{name}/knn", {"dataset": hashed_dict(data), "temperature": ev.knn_temperature}, inputs(),
                                lambda: knn_eval(encoder, data, out_dir("knn"), temperature=ev.knn_temperature),
                                output("knn"), after))
        if ev.linear and "linear" not in self.skipped_evals:
            from clsp.eval.linear import linear_eval

            stages.append(Stage(f"eval/{name}/linear", {"dataset": hashed_dict(data), "probe": hashed_dict(ev.linear_probe)}, inputs(),
                                lambda: linear_eval(encoder, data, out_dir("linear"), ev.linear_probe),
                                output("linear"), after))
        if ev.embed and figures and "embed" not in self.skipped_evals:
            from clsp.eval.embed import embed_plot

            stages.append(Stage(f"eval/{name}/embed", {"dataset": hashed_dict(data), "n": ev.embed_n, "seed": ev.seed}, inputs(),
                                lambda: embed_plot(encoder, data, out_dir("embed"), n=ev.embed_n, seed=ev.seed),
                                output("embed"), after))
        if ev.hardness and figures:
            from clsp.eval.hardness import hardness_eval

            stages.append(Stage(f"eval/{name}/hardness", {"dataset": hashed_dict(cfg.dataset), "n": ev.hardness_n, "seed": ev.seed},
                                inputs(with_store=True),
                                lambda: hardness_eval(encoder, cfg.dataset, store, out_dir("hardness"), n=ev.hardness_n,
                                                      seed=ev.seed), output("hardness"),
                                after + (synthesis_name(store.name),)))
        if ev.transfer and spec.sweep is None:
            from clsp.eval.transfer import transfer_eval

            stages.append(Stage(f"eval/{name}/transfer", {"sets": list(ev.transfer), "root": ev.transfer_root,
                                                          "probe": hashed_dict(ev.linear_probe)}, inputs(),
                                lambda: transfer_eval(encoder, list(ev.transfer), out_dir("transfer"), root=ev.transfer_root,
                                                      probe_cfg=ev.linear_probe, skip_missing=ev.skip_missing_transfer),
                                output("transfer"), after))
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
        anchors = torch.from_numpy(train.images_at(indices.numpy()))
        grids.save_png(self.layout.figure("anchors"), grids.candidates_grid(anchors, store.candidates(indices)))
        if not self.cfg.w_sweep:
            return
        unet, scheduler_config = load_model(self.model_dir)
        device = "cuda" if torch.cuda.is_available() and self.cfg.trainer.accelerator != "cpu" else "cpu"
        unet = unet.to(device).eval()
        few = anchors[: min(4, n)]
        k = min(self.cfg.synthesis.k, 4)
        labels = None if train.labels is None else torch.from_numpy(train.labels[: len(few)])   # for a class-conditional model
        sweep = [(w, generate_positives(unet, scheduler_config, few, k, dataclasses.replace(self.cfg.synthesis.sampler, w=w),
                                        seed=self.cfg.synthesis.seed, device=device, anchor_labels=labels))
                 for w in self.cfg.w_sweep]
        title = f"interpolation weight w ({self.cfg.synthesis.sampler.sampler}, {self.cfg.synthesis.sampler.steps} steps)"
        grids.save_png(self.layout.figure("w_sweep"), grids.w_sweep_image(few, sweep, title=title))

    def preflight(self, announce: bool = True) -> None:
        """What the stages will need, checked before the first one runs: the model directory, the training
        images (in memory when a diffusion model is trained on them; enough for every pretraining batch),
        and labelled train and test splits for kNN, linear and t-SNE. Those three are skipped, and said so,
        when the training set has no labels (a flat folder) and no labelled set is named (eval.dataset)."""
        from clsp.data.config import load_split
        from clsp.methods.pretrain import check_backbone, check_third_view_inputs, fit_batch_to_data, require_labels_for
        from clsp.training import world_size

        cfg, ev = self.cfg, self.cfg.eval
        if cfg.model_dir and not self.model_dir.is_dir():
            raise UserError(f"model_dir {cfg.model_dir} is not a directory; give a local diffusers model "
                            "(unet/ + scheduler/, or a flat one), or leave model_dir unset to train one")
        self.dataset_fingerprint()
        train = self._train_set
        if self.diffusion is not None and not train.resident:
            raise UserError(f"dataset {cfg.dataset.name} streams from disk, so the pipeline cannot train a diffusion "
                            "model on it; give a trained local diffusers model with model_dir=DIR")
        backbones = {(pre.backbone.arch, pre.backbone.stem, pre.backbone.width): pre for pre in self.runs.values()}
        for pre in backbones.values():                                      # e.g. an unknown timm model
            check_backbone(pre, train.image_size)
        batches_fitted: Dict[str, str] = {}
        for name, pre in self.runs.items():
            require_labels_for(pre.method, train)
            check_third_view_inputs(pre, train, None, train.resident)      # the oracle's labels
            if pre.third_view == "synthetic" and pre.clsp.positives_per_step > cfg.synthesis.k:
                raise UserError(f"pretraining {name}: clsp.positives_per_step={pre.clsp.positives_per_step} is more than "
                                f"the synthesis.k={cfg.synthesis.k} candidates stored per image; use at most {cfg.synthesis.k}")
            if self.specs[name].method == "none":
                continue                                                    # the floor trains nothing
            try:
                self.runs[name], fitted = fit_batch_to_data(pre, len(train), world_size(pre.trainer), prefix="pretrain.")
            except UserError as e:
                raise UserError(f"pretraining {name}: {e}") from None
            if fitted:
                batches_fitted[name] = fitted
                if announce:
                    log.info(f"pipeline: pretraining {name}: {fitted}")
        self.data_record = {"train": _describe(train), "eval": None, "skipped": {}, "batches_fitted": batches_fitted}
        wanted = [kind for kind in LABELLED_EVALS if getattr(ev, kind)]
        if wanted and ev.dataset is None and train.labels is None:
            self.skipped_evals = {kind: f"{cfg.dataset.name} has no labels; to evaluate, name a labelled set with "
                                        f"eval.dataset.name=NAME (or folder:PATH)" for kind in wanted}
        elif wanted:  # at the encoder's input size, as the evaluations will load them
            data = dataclasses.replace(self.eval_data(), size=self.eval_data().size or int(train.shape[0]))
            self.data_record["eval"] = {split: _describe(load_split(data, getattr(data, f"{split}_split"), require_labels=True))
                                        for split in ("train", "test")}
        if ev.positives and train.labels is None:
            self.skipped_evals["positives"] = (f"{cfg.dataset.name} has no labels, and the positives evaluation judges a "
                                               "candidate by its anchor's class")
        self.data_record["skipped"] = dict(self.skipped_evals)

    def _run_in_order(self, stages: list[Stage], records: StageRecords) -> None:
        """jobs: 1, the stages one after another in this process, in plan order."""
        from clsp.jobs import cpu_time
        from clsp.rundir import fingerprint

        for i, stage in enumerate(stages, 1):
            key = fingerprint(stage.config, stage.inputs())
            if records.is_complete(stage.name, key, stage.output):
                log.info(f"pipeline: [{i}/{len(stages)}] {stage.name}: complete for the same inputs, skipped")
                continue
            log.info(f"pipeline: [{i}/{len(stages)}] {stage.name}: running")
            started, cpu_started = time.perf_counter(), cpu_time()
            stage.run()
            seconds = time.perf_counter() - started
            records.complete(stage.name, key, seconds, cpu_time() - cpu_started)
            log.info(f"pipeline: [{i}/{len(stages)}] {stage.name}: done in {seconds:.1f} s")

    def stage_command(self) -> list[str]:
        """The command of a worker that runs stages in a process of its own (with `--worker`): this run's recorded
        config, with the slot's share of trainer.threads when that is set (else CLSP_THREADS gives it)."""
        import sys

        from clsp.jobs import thread_share

        share = [f"trainer.threads={thread_share(self.cfg.trainer, self.cfg.jobs)[0]}"] \
            if self.cfg.trainer.threads is not None else []
        return [sys.executable, "-m", "clsp", "pipeline", "--config", str(self.layout.config), *share]

    def execute(self) -> Path:
        """Run the stages, holding the run directory's lock (a second pipeline on it stops at once)."""
        from clsp.lock import run_lock

        with run_lock(self.layout.root):
            return self._execute()

    def _execute(self) -> Path:
        from clsp import rundir
        from clsp.io import write_json_atomic
        from clsp.rundir import fingerprint

        self.preflight()
        stages = self.stages()
        if self.cfg.jobs > 1:  # before anything is written: the slots' threads and GPUs (may refuse the devices)
            from clsp.jobs import job_environments

            slots = job_environments(self.layout.root, self.cfg.trainer, self.cfg.jobs)
        run = rundir.Stage(self.layout.root, self.cfg)
        run.start()
        write_json_atomic(self.layout.data, self.data_record)
        if self.skipped_evals:
            kinds = ", ".join(EVAL_NAMES[k] for k in self.skipped_evals)
            log.info(f"pipeline: {kinds} skipped: {next(iter(self.skipped_evals.values()))}")
        records = StageRecords(self.layout.root)
        log.info(f"pipeline: {len(stages)} stages -> {self.layout.root}")
        if self.cfg.jobs > 1:
            from clsp.jobs import run_parallel

            run_parallel(stages, records, lambda stage: fingerprint(stage.config, stage.inputs()), self.stage_command(),
                         slots)
        else:
            self._run_in_order(stages, records)
        report = None
        if self.cfg.report:
            from clsp.report.html import build_report

            started = time.perf_counter()
            report = build_report(self.layout.root)
            log.info(f"pipeline: report written in {time.perf_counter() - started:.1f} s")
        run.done({"report": str(report) if report else None})
        return report or self.layout.root


def synthesis_name(store: str) -> str:
    """The stage that makes a store: synthesis for positives/, synthesis-w0.3 for positives-w0.3/."""
    return store.replace("positives", "synthesis", 1)


def _describe(ds) -> Dict[str, Any]:
    """What the report says about a split the run used: its true size and where it came from."""
    return {"name": ds.name, "split": ds.split, "n": len(ds), "labelled": ds.labels is not None, "source": ds.source}


def run_pipeline(cfg: PipelineConfig) -> Path:
    """Run (or finish) every stage of `cfg` in cfg.out_dir; returns the report's path (the run directory
    when report is false)."""
    from clsp.training import apply_threads

    apply_threads(cfg.trainer)
    return Pipeline(cfg).execute()


def serve_stages(cfg: PipelineConfig) -> None:
    """A worker of a running pipeline (`--worker`, started by clsp.jobs for `jobs: N`): the same plan, and the
    stages it is sent run one at a time. The pipeline that started it holds the run lock and writes the records."""
    from clsp.jobs import serve
    from clsp.lock import run_lock
    from clsp.training import apply_threads

    apply_threads(cfg.trainer)
    pipeline = Pipeline(cfg)
    with run_lock(pipeline.layout.root):   # the parent's: nothing to take (clsp.lock.is_launcher)
        pipeline.preflight(announce=False)  # the same plan as the parent's (it decides which evaluations run)
        serve({stage.name: stage for stage in pipeline.stages()})


# -- CLI --------------------------------------------------------------------------------------------

def register(subparsers) -> None:
    import argparse

    from clsp.cli import TRAINING_FLAGS, add_command, config_command, model_sampler

    parser = add_command(
        subparsers, "pipeline",
        description="Run the whole method in one run directory: train the diffusion model (or use model_dir), "
                    "synthesize positives, pretrain each method with and without CLSP, evaluate, write report.html. "
                    "Run it again to resume: completed stages are skipped.")
    config_command(parser, PipelineConfig, _run, presets="", check=Pipeline,
                   defaults=model_sampler("synthesis.sampler", "model_dir"),
                   flags=TRAINING_FLAGS,
                   examples=["clsp pipeline --config demo",
                             "clsp pipeline --config demo methods=[simclr] --out runs/demo-simclr",
                             "clsp pipeline --config cifar10 pretrain.epochs=200 trainer.devices=8"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # for `jobs` (clsp.jobs)
    whole = parser.get_default("func")

    def execute(args) -> int:
        if not args.worker:
            return whole(args)
        serve_stages(args.resolve(args))
        return 0
    parser.set_defaults(func=execute)


def _run(cfg: PipelineConfig) -> int:
    result = run_pipeline(cfg)
    if result.suffix == ".html":
        print(f"report: {result}")
        print(f"open it with: xdg-open {result}")
    else:
        print(f"run directory: {result}")
    return 0
