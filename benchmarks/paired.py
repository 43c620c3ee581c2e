"""Before / after as a ratio on a shared, noisy machine: a step_overhead.py run on two commits' source trees,
alternated (A B A B ...), each pair's ratio of ms per step taken while the load was the same.

Each commit's src/ is exported (git archive) and this tree's benchmarks/step_overhead.py runs on it, so both
sides measure the same step with the same script. The result (every run's figures, each pair's ratio, their
median, min and max, the load average before and after) goes to benchmarks/results/.

    python benchmarks/paired.py BEFORE AFTER [--rounds 5] [--label issue29] -- STEP_OVERHEAD_ARGUMENTS
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from clsp.benchmark import RESULTS, record, stamp  # noqa: E402


def export(commit: str, into: Path) -> Path:
    """The commit's tree with this tree's step_overhead.py beside it."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src", "benchmarks"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "benchmarks" / "step_overhead.py").write_text((ROOT / "benchmarks" / "step_overhead.py").read_text())
    return into


def run(tree: Path, args: list[str], out: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    subprocess.run([sys.executable, str(tree / "benchmarks" / "step_overhead.py"), *args, "--record", "--results",
                    str(out)], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    [path] = out.glob("*.json")
    return json.loads(path.read_text())["results"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--label", default="paired")
    parser.add_argument("--results", default=str(RESULTS))
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    bench = argv[cut + 1:]                     # step_overhead.py's arguments
    commits = {side: subprocess.run(["git", "-C", str(ROOT), "rev-parse", getattr(args, side)], check=True,
                                    capture_output=True, text=True).stdout.strip() for side in ("before", "after")}
    load_start = os.getloadavg()
    runs: dict[str, list[list[dict]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {side: export(commit, Path(tmp) / side) for side, commit in commits.items()}
        for i in range(args.rounds):
            for side in ("before", "after"):
                runs[side].append(run(trees[side], bench, Path(tmp) / f"{side}-{i}"))
                print(f"round {i} {side}: " + ", ".join(f"{r['method']} {r['ms_per_step_median']:.1f} ms"
                                                       for r in runs[side][-1]), flush=True)
    summary = []
    for j, first in enumerate(runs["before"][0]):
        before = [r[j]["ms_per_step_median"] for r in runs["before"]]
        after = [r[j]["ms_per_step_median"] for r in runs["after"]]
        ratios = [a / b for a, b in zip(after, before)]
        summary.append({"method": first["method"], "backbone": first["backbone"], "width": first.get("width"),
                        "batch": first.get("batch"), "image_size": first.get("image_size"),
                        "ms_before_median": statistics.median(before), "ms_after_median": statistics.median(after),
                        "ratio_after_over_before": {"median": statistics.median(ratios), "min": min(ratios),
                                                    "max": max(ratios), "pairs": len(ratios)},
                        "aten_calls_before": first["aten_calls_per_step"],
                        "aten_calls_after": runs["after"][0][j]["aten_calls_per_step"]})
        s = summary[-1]
        print(f"{s['method']:8s} {s['backbone']} w{s['width']}: before {s['ms_before_median']:.1f} ms, after "
              f"{s['ms_after_median']:.1f} ms; after/before median {s['ratio_after_over_before']['median']:.2f} "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f}, {len(ratios)} pairs)")
    result = stamp({"benchmark": "step_overhead.py alternated on two commits' source trees (before, after)",
                    "commits": commits, "arguments": bench, "cpus": len(os.sched_getaffinity(0)),
                    "load_average_1min_start": load_start[0], "load_average_1min_end": os.getloadavg()[0],
                    "summary": summary, "runs": runs})
    print(f"recorded {record(f'step-overhead-{args.label}', result, args.results, device='cpu')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
