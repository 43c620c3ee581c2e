"""The runs of a pipeline, their names and where each piece of the run directory lives: one definition,
read by the pipeline that writes a run, the report that reads it and the tests.

A pipeline trains one encoder per (method, variant, seed), plus one per value of a swept setting
(the paper's ablations: w, K or the CLSP weight lambda) and, as the floor every method must clear,
evaluates the untrained encoder of each seed ("no pretraining"). A run's name is its directory under
RUN/pretrain/ and RUN/eval/:

    simclr, simclr-clsp, simclr-aug              one seed (simclr-oracle: the labelled upper bound)
    simclr-clsp-w0.3                             a swept value (w = 0.3)
    simclr-clsp-seed1                            several seeds: every run carries its seed
    no-pretraining[-seed1]                       the randomly initialised encoder

The group of a run is its name without the seed: the report averages over a group's seeds.
A w or K sweep needs its own positives store (RUN/positives-w0.3/); the main store is RUN/positives/.
`RunLayout` spells every path of the run directory (docs/ARCHITECTURE.md draws it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

VARIANT_SUFFIX = {"clsp": "-clsp", "aug": "-aug", "oracle": "-oracle"}
VARIANT_LABEL = {"base": "baseline", "clsp": "+ CLSP", "aug": "+ aug (control)", "oracle": "+ oracle (labels; upper bound)",
                 "none": "no pretraining"}
FLOOR = "no-pretraining"
SWEEPABLE = ("w", "k", "weight", "start")  # synthesis w, candidates K, CLSP weight lambda, partial-noise start s
STORE_SWEEPS = ("w", "k", "start")        # the settings that need a store of their own

ENCODER_FILE = "encoder.safetensors"      # what pretraining leaves and evaluation reads (clsp.models.encoder)
METRICS_FILE = "metrics.json"             # a pretraining run's summary; every evaluation's results (docs/metrics.md)
TRAINING_LOG = "logs/metrics.csv"         # the training curves of a run (clsp.training's CSV logger)
POSITIVES_FIGURE = "positives.png"        # agreement and hardness against w, beside a store's evaluation
TRADEOFF_FIGURE = "positives_tradeoff.png"  # agreement against hardness, one curve per generator, beside it too


def value_text(value: float) -> str:
    """0.3 -> '0.3', 4.0 -> '4': the value as it appears in names."""
    return f"{value:g}"


@dataclass(frozen=True)
class RunSpec:
    """One encoder of a pipeline run."""

    method: str                           # simclr | moco | nnclr | all4one | none (no pretraining)
    variant: str                          # base | clsp | aug | oracle | none
    seed: int = 0
    sweep: Optional[tuple[str, float]] = None   # (setting, value) of a swept CLSP run
    seeded_name: bool = False             # the pipeline has several seeds: the name carries this one

    @property
    def group(self) -> str:
        if self.method == "none":
            return FLOOR
        name = self.method + VARIANT_SUFFIX.get(self.variant, "")
        if self.sweep is not None:
            name += f"-{self.sweep[0]}{value_text(self.sweep[1])}"
        return name

    @property
    def name(self) -> str:
        return f"{self.group}-seed{self.seed}" if self.seeded_name else self.group

    @property
    def store(self) -> str:
        """The positives store directory (relative to the run) this run reads, or '' when it reads none."""
        if self.variant != "clsp":
            return ""
        if self.sweep is not None and self.sweep[0] in STORE_SWEEPS:
            return store_name(self.sweep)
        return "positives"

    def as_dict(self) -> dict:
        return {"name": self.name, "group": self.group, "method": self.method, "variant": self.variant,
                "seed": self.seed, "sweep": list(self.sweep) if self.sweep else None, "store": self.store}


def store_name(sweep: Optional[tuple[str, float]]) -> str:
    return "positives" if sweep is None else f"positives-{sweep[0]}{value_text(sweep[1])}"


def run_name(method: str, variant: str) -> str:
    """The directory name of a single-seed, unswept run: simclr, simclr-clsp, simclr-aug."""
    return RunSpec(method, variant).name


def plan_runs(methods: Sequence[str], variants: Sequence[str], seeds: Sequence[int] = (0,),
              sweep_setting: str = "", sweep_values: Sequence[float] = (), sweep_methods: Sequence[str] = (),
              sweep_seeds: Sequence[int] = (), main_values: Optional[dict] = None, floor: bool = False) -> list[RunSpec]:
    """Every run of a pipeline, in the order they train: per method its variants, then its swept runs;
    each for every seed. A swept value equal to the main setting (`main_values[setting]`) is the main
    CLSP run itself, not a second copy of it."""
    seeded = len(seeds) > 1 or any(s not in seeds for s in sweep_seeds)
    runs: list[RunSpec] = []
    if floor:
        runs += [RunSpec("none", "none", s, None, seeded) for s in seeds]
    main = (main_values or {}).get(sweep_setting)
    for method in methods:
        for variant in variants:
            runs += [RunSpec(method, variant, s, None, seeded) for s in seeds]
        if sweep_setting and (not sweep_methods or method in sweep_methods):
            for value in sweep_values:
                if main is not None and float(value) == float(main) and "clsp" in variants:
                    continue
                runs += [RunSpec(method, "clsp", s, (sweep_setting, float(value)), seeded) for s in (sweep_seeds or seeds)]
    return runs


def runs_from_config(config: dict) -> list[RunSpec]:
    """The runs a pipeline config (a plain dict, e.g. a run directory's config.yaml) plans."""
    sweep = config.get("sweep") or {}
    synthesis = config.get("synthesis") or {}
    pretrain = config.get("pretrain") or {}
    main_values = {"w": (synthesis.get("sampler") or {}).get("w"), "k": synthesis.get("k"),
                   "start": (synthesis.get("sampler") or {}).get("start", 1.0),
                   "weight": (pretrain.get("clsp") or {}).get("weight")}
    return plan_runs(config.get("methods") or [], config.get("variants") or [], config.get("seeds") or [0],
                     sweep.get("setting") or "", sweep.get("values") or [], sweep.get("methods") or [],
                     sweep.get("seeds") or [], main_values, bool(config.get("floor", False)))


@dataclass(frozen=True)
class RunLayout:
    """Where each piece of a pipeline run directory lives: the only place that spells these paths.

        config.yaml env.json log.txt done.json     the pipeline's own run records (clsp.rundir)
        data.json timings.json report.html         the splits used; the stages' times; the report
        stages/<stage>.json (.yaml)                each stage's record (and, run as its own command, its config)
        diffusion/ model/ samples/                 stage 1
        positives/ positives-w0.3/ figures/        stage 2: the stores; anchors.png, w_sweep.png, the report's plots
        pretrain/<run>/                            stage 3: encoder.safetensors, metrics.json, logs/metrics.csv
        eval/<run>/<kind>/ eval/<store>/           stage 4: each evaluation of an encoder; each store's
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def relative(self, path: Path) -> str:
        """`path` as the report names it: relative to the run, with forward slashes."""
        return Path(path).relative_to(self.root).as_posix()

    # the run's own files
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def env(self) -> Path:
        return self.root / "env.json"

    @property
    def data(self) -> Path:
        return self.root / "data.json"

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def stages(self) -> Path:
        return self.root / "stages"

    def stage_record(self, stage: str, suffix: str = ".json") -> Path:
        """stages/pretrain__simclr.json for stage 'pretrain/simclr' (suffix .yaml: the config it ran with)."""
        return self.stages / (stage.replace("/", "__") + suffix)

    # stage 1: the diffusion model
    @property
    def diffusion(self) -> Path:
        return self.root / "diffusion"

    @property
    def model(self) -> Path:
        return self.diffusion / "model"

    @property
    def samples(self) -> Path:
        return self.diffusion / "samples"

    # stage 2: the stores and the figures
    def store(self, name: str = "positives") -> Path:
        """A positives store by its name (RunSpec.store, store_name(sweep))."""
        return self.root / name

    def figure(self, name: str) -> Path:
        return self.root / "figures" / f"{name}.png"

    # stage 3: the encoders
    @property
    def pretrain_root(self) -> Path:
        return self.root / "pretrain"

    def pretrain(self, run: str) -> Path:
        return self.pretrain_root / run

    def encoder(self, run: str) -> Path:
        return self.pretrain(run) / ENCODER_FILE

    def pretrain_metrics(self, run: str) -> Path:
        return self.pretrain(run) / METRICS_FILE

    def training_log(self, run: str) -> Path:
        return self.pretrain(run) / TRAINING_LOG

    # stage 4: the evaluations
    def evaluation(self, run: str, kind: str) -> Path:
        """eval/<run>/<kind>/: an evaluation (knn, linear, embed, hardness, transfer) of a run's encoder."""
        return self.root / "eval" / run / kind

    def store_evaluation(self, store: str = "positives") -> Path:
        """eval/<store>/: the positives evaluation of a store."""
        return self.root / "eval" / store

    def eval_metrics(self, run: str, kind: str) -> Path:
        return self.evaluation(run, kind) / METRICS_FILE

    def store_metrics(self, store: str = "positives") -> Path:
        return self.store_evaluation(store) / METRICS_FILE
