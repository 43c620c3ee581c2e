"""Copy what a finished pipeline run found into a folder small enough to commit (results/<name>/).

    python scripts/collect_results.py RUN_DIR DEST [--command "clsp pipeline ..."] [--reference STUDY_RUN_DIR]

Kept: the report (self-contained HTML, figures embedded), the run's records (config.yaml, env.json, data.json,
inputs.json, timings.json, stages/), every metrics.json of pretraining and evaluation, the training curves
(logs/metrics.csv) and the positives evaluations' figures. Left out: encoders, checkpoints, stores (large, and
remade by the command). summary.md states the command, machine, date, commit, the wall time of each stage and the
study table (mean +- std over seeds, the differences to the base and + aug runs and whether they exceed two standard
errors; --reference names the run directory holding those when RUN_DIR holds only extra arms).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from clsp.io import read_json  # noqa: E402
from clsp.layout import RunSpec  # noqa: E402
from clsp.report import study  # noqa: E402
from clsp.report.html import RunDirectory  # noqa: E402

KEEP = ("report.html", "config.yaml", "env.json", "data.json", "inputs.json", "timings.json", "log.txt")


def copy_tree(run: Path, dest: Path) -> int:
    n = 0
    for name in KEEP:
        if (run / name).is_file():
            shutil.copy2(run / name, dest / name)
            n += 1
    patterns = ["stages/*.json", "pretrain/*/metrics.json", "pretrain/*/config.yaml", "pretrain/*/logs/metrics.csv",
                "eval/*/*/metrics.json", "eval/*/metrics.json", "eval/*/positives.png", "figures/*.png",
                "positives*/manifest.json"]
    for pattern in patterns:
        for path in sorted(run.glob(pattern)):
            target = dest / path.relative_to(run)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            n += 1
    return n


def fmt(s: study.Summary) -> str:
    if s.mean is None:
        return "failed" if s.failed else "-"
    return f"{s.mean:.2f}" + (f" ± {s.std:.2f}" if s.std is not None else "") + f" (n={s.n})"


def fmt_diff(d: study.Difference) -> str:
    if d.delta is None:
        return "-"
    if d.se is None:
        return f"{d.delta:+.2f} (one seed)"
    return f"{d.delta:+.2f} ± {d.se:.2f} " + {"up": "**> 2 SE**", "down": "**< -2 SE**"}.get(d.verdict, "(within 2 SE)")


def groups_of(run: Path) -> tuple[RunDirectory, dict, dict, dict]:
    """The run directory, its run name -> RunNumbers, group -> metric -> Summary and group -> RunSpec."""
    rd = RunDirectory.read(run)
    numbers = {name: rd.numbers(name) for name in rd.runs}
    return rd, numbers, study.group_summaries(list(numbers.values())), {rd.specs[n].group: rd.specs[n] for n in rd.runs}


def reference_group(variant: str, spec: RunSpec, groups: dict, reference: dict) -> dict | None:
    """The summaries of the method's `variant` group: this run's, else the reference run's (a run directory that
    holds only extra arms is compared with the base and + aug runs of the study it extends)."""
    name = RunSpec(spec.method, variant).group
    return groups.get(name) or reference.get(name)


def summary(run: Path, command: str, reference_run: Path | None = None) -> str:
    rd, numbers, groups, specs = groups_of(run)
    reference = groups_of(reference_run)[2] if reference_run else {}
    env, timings = rd.env, rd.timings
    lines = [f"# {run.name}: results", "",
             f"- command: `{command or ' '.join(['clsp', *env.get('argv', [])[1:]])}`",
             f"- machine: {env.get('host', '?')}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs, device {next(iter(timings.get('stages', {}).values()), {}).get('device', '?')}",
             f"- started {env.get('started_at', '?')}; commit {env.get('git_commit', '?')}",
             f"- total stage time {timings.get('total_seconds', 0) / 60:.1f} min", "",
             *([f"- compared with the base and + aug runs of {reference_run}"] if reference_run else []),
             "| group | seeds | kNN best k | kNN k=200 | linear | Δ kNN vs base | Δ linear vs base | Δ kNN vs + aug "
             "| Δ linear vs + aug | collapsed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for group, s in groups.items():
        spec = specs[group]
        versus = []
        for variant in ("base", "aug"):
            ref = reference_group(variant, spec, groups, reference) if spec.variant not in (variant, "base", "none") else None
            versus += [fmt_diff(study.difference(s[m], ref[m])) if ref else "" for m in ("knn", "linear")]
        collapsed = sum(1 for r in numbers.values() if r.spec.group == group and r.collapsed)
        if collapsed:   # a collapsed run's accuracies are its backbone's, not a contrastive space's: no difference
            versus = ["(collapsed)" if v else "" for v in versus]
        seeds = max(x.n + x.failed for x in s.values())
        lines.append(f"| {group} | {seeds} | {fmt(s['knn'])} | {fmt(s['knn200'])} | {fmt(s['linear'])} | "
                     + " | ".join(versus) + f" | {collapsed or ''} |")
    lines += ["", "Positives (clsp eval positives, per store):", "",
              "| store | w | agreement % | Frechet | pixels at 0 % | diversity | cos to anchor |", "|---|---|---|---|---|---|---|"]
    for path in sorted(run.glob("eval/positives*/metrics.json")):
        r = read_json(path)["results"]
        st = r["store"]
        diversity = st["diversity"]
        diversity = "n/a (K = 1)" if diversity is None or math.isnan(diversity) else f"{diversity:.3f}"
        lines.append(f"| {path.parent.name} | {st['w']} | {st['agreement']:.1f} (ceiling {r['ceiling']:.1f}) | "
                     f"{st['frechet']:.2f} | {st['pixels']['at_0']:.1f} (real {r['real']['pixels']['at_0']:.1f}) | "
                     f"{diversity} | {st['similarity']['synthetic']:.3f} |")
    lines += ["", "Wall time of each stage (seconds; CPU seconds in timings.json):", ""]
    lines += [f"- {name}: {t['seconds']:.0f}" for name, t in timings.get("stages", {}).items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--command", default="")
    parser.add_argument("--reference", type=Path, default=None,
                        help="a run directory whose base and + aug runs the differences use when RUN has none")
    args = parser.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    n = copy_tree(args.run, args.dest)
    (args.dest / "summary.md").write_text(summary(args.run, args.command, args.reference))
    print(f"{args.dest}: {n} files and summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
