"""benchmarks/step_overhead.py runs a real step and records what it counted (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "step_overhead.py"


def test_the_step_overhead_benchmark_counts_every_phase_and_records(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("step_overhead_benchmark", BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--methods", "moco", "--backbone", "narrow", "--steps", "2", "--warmup", "1",
                       "--label", "test", "--record", "--results", str(tmp_path)]) == 0
    [path] = tmp_path.glob("step-overhead-test-cpu-*.json")
    result = json.loads(path.read_text())
    assert result["device"] and result["date"] and "commit" in result and result["label"] == "test"
    [moco] = result["results"]
    assert moco["backbone"] == "resnet18-narrow" and moco["parameters"] < 1_000_000
    phases = moco["aten_calls_by_phase"]
    assert set(phases) == {"views", "forward", "backward", "optimiser"} and all(n > 0 for n in phases.values())
    assert sum(phases.values()) == moco["aten_calls_per_step"]
    assert "aten calls/step" in capsys.readouterr().out
