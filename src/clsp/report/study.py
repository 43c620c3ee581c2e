"""The numbers behind the report's tables: per run, per group of seeds, and the differences CLSP makes.

A run's accuracy is a number only when its evaluation fitted: a linear probe that diverged or stayed at
chance, or an online probe at chance, is a failure, shown as one and left out of every mean. A group
(a method variant over its seeds) is reported as mean +- standard deviation with the count of seeds
behind it; a difference between two groups comes with its standard error, sqrt(s1^2/n1 + s2^2/n2),
and counts as a finding only beyond two standard errors. With one seed there is no noise estimate, and
the report says so instead of colouring a difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

from clsp.layout import RunSpec

METRICS = ("knn", "knn200", "linear", "probe")


@dataclass
class RunNumbers:
    """One encoder's accuracies (None = not measured) and why any of them is not a number."""

    spec: RunSpec
    values: dict = field(default_factory=dict)        # metric -> float | None
    failed: dict = field(default_factory=dict)        # metric -> reason
    collapsed: Optional[str] = None                   # why the run's projections are judged collapsed
    clsp_form: Optional[str] = None                   # the CLSP term's form where it is not the paper's (clsp.form)


@dataclass
class Summary:
    """Mean, standard deviation and count over the seeds that gave a number."""

    mean: Optional[float]
    std: Optional[float]
    n: int
    failed: int = 0
    reasons: tuple = ()

    @property
    def se(self) -> Optional[float]:
        return None if self.std is None or self.n < 2 else self.std / math.sqrt(self.n)


def summarise(values: Sequence[Optional[float]], reasons: Sequence[str] = ()) -> Summary:
    xs = [v for v in values if v is not None]
    if not xs:
        return Summary(None, None, 0, len(reasons), tuple(reasons))
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return Summary(mean, std, len(xs), len(reasons), tuple(reasons))


@dataclass
class Difference:
    delta: Optional[float]
    se: Optional[float]

    @property
    def verdict(self) -> str:
        """'up' / 'down' beyond two standard errors, 'noise' within them, 'unknown' without a noise estimate."""
        if self.delta is None:
            return "unknown"
        if self.se is None:
            return "unknown"
        if abs(self.delta) > 2 * self.se:
            return "up" if self.delta > 0 else "down"
        return "noise"


def difference(a: Summary, b: Summary) -> Difference:
    """a - b with the standard error of a difference of two independent means."""
    if a.mean is None or b.mean is None:
        return Difference(None, None)
    se = math.sqrt(a.se ** 2 + b.se ** 2) if a.se is not None and b.se is not None else None
    return Difference(a.mean - b.mean, se)


def online_probe_failure(acc: Optional[float], num_classes: Optional[int], n_test: Optional[int]) -> Optional[str]:
    """The online probe is at chance when its accuracy is within three standard errors of 1/C."""
    if acc is None or not num_classes or not n_test:
        return None
    chance = 100.0 / num_classes
    noise = 300.0 * math.sqrt((1 / num_classes) * (1 - 1 / num_classes) / n_test)
    return f"online probe {acc:.1f}% is at chance ({chance:.1f}% +- {noise:.1f})" if acc <= chance + noise else None


def run_numbers(spec: RunSpec, knn: dict | None, linear: dict | None, pretrain: dict | None) -> RunNumbers:
    """A run's numbers from its metrics.json files (docs/metrics.md); failures named."""
    out = RunNumbers(spec)
    r_knn = (knn or {}).get("results") or {}
    out.values["knn"] = _number(r_knn.get("best"))
    out.values["knn_k"] = r_knn.get("best_k")
    out.values["knn200"] = _number(r_knn.get("fixed"))
    out.values["k200"] = r_knn.get("fixed_k")                  # below 200 when the training split is smaller
    r_lin = (linear or {}).get("results") or {}
    out.values["linear"] = _number(r_lin.get("top1"))
    fit = r_lin.get("fit") or {}
    if out.values["linear"] is not None and fit.get("status") not in (None, "ok"):
        out.failed["linear"] = f"{fit['status'].replace('_', ' ')}: {fit.get('reason', '')}"
        out.values["linear"] = None
    probe = _number((pretrain or {}).get("probe_test_acc"))
    reason = online_probe_failure(probe, r_lin.get("num_classes") or (knn or {}).get("dataset", {}).get("classes"),
                                  r_lin.get("n_test") or r_knn.get("n_test"))
    out.values["probe"] = None if reason else probe
    if reason:
        out.failed["probe"] = reason
    if (pretrain or {}).get("clsp_form") not in (None, "cosine"):
        out.clsp_form = pretrain["clsp_form"]
    if (pretrain or {}).get("collapsed"):
        out.collapsed = (f"the SSL loss ended at {pretrain['ssl_loss_final']:.3f}, the loss of identical projections "
                         f"({pretrain['ssl_loss_collapsed']:.3f}): the projections collapsed or never left chance")
    return out


def group_summaries(runs: Sequence[RunNumbers]) -> dict[str, dict[str, Summary]]:
    """group name -> metric -> Summary over its seeds, in the runs' order."""
    groups: dict[str, list[RunNumbers]] = {}
    for r in runs:
        groups.setdefault(r.spec.group, []).append(r)
    return {g: {m: summarise([r.values.get(m) for r in rs], [r.failed[m] for r in rs if m in r.failed]) for m in METRICS}
            for g, rs in groups.items()}


def _number(value) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)
