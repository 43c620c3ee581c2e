"""The runs of a pipeline and their names: one definition, read by the pipeline, the report and the tests.

A pipeline trains one encoder per (method, variant, seed), plus one per value of a swept setting
(the paper's ablations: w, K or the CLSP weight lambda) and, as the floor every method must clear,
evaluates the untrained encoder of each seed ("no pretraining"). A run's name is its directory under
RUN/pretrain/ and RUN/eval/:

    simclr, simclr-clsp, simclr-aug              one seed
    simclr-clsp-w0.3                             a swept value (w = 0.3)
    simclr-clsp-seed1                            several seeds: every run carries its seed
    no-pretraining[-seed1]                       the randomly initialised encoder

The group of a run is its name without the seed: the report averages over a group's seeds.
A w or K sweep needs its own positives store (RUN/positives-w0.3/); the main store is RUN/positives/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

VARIANT_SUFFIX = {"clsp": "-clsp", "aug": "-aug"}
VARIANT_LABEL = {"base": "baseline", "clsp": "+ CLSP", "aug": "+ aug (control)", "none": "no pretraining"}
FLOOR = "no-pretraining"
SWEEPABLE = ("w", "k", "weight")          # synthesis w, candidates K, CLSP weight lambda
STORE_SWEEPS = ("w", "k")                 # the settings that need a store of their own


def value_text(value: float) -> str:
    """0.3 -> '0.3', 4.0 -> '4': the value as it appears in names."""
    return f"{value:g}"


@dataclass(frozen=True)
class RunSpec:
    """One encoder of a pipeline run."""

    method: str                           # simclr | moco | nnclr | all4one | none (no pretraining)
    variant: str                          # base | clsp | aug | none
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
                   "weight": (pretrain.get("clsp") or {}).get("weight")}
    return plan_runs(config.get("methods") or [], config.get("variants") or [], config.get("seeds") or [0],
                     sweep.get("setting") or "", sweep.get("values") or [], sweep.get("methods") or [],
                     sweep.get("seeds") or [], main_values, bool(config.get("floor", False)))
