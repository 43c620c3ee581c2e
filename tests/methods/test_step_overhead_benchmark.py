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


def test_the_step_floor_benchmark_times_both_memory_formats_and_records(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("step_floor_benchmark", BENCHMARK.with_name("step_floor.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--shapes", "bench", "--methods", "moco", "--rounds", "1", "--steps", "1", "--record",
                       "--results", str(tmp_path)]) == 0
    [path] = tmp_path.glob("step-floor-cpu-*.json")
    result = json.loads(path.read_text())
    assert result["device"] and "commit" in result and result["shapes"]["bench"][:4] == ["cifar", 64, 2, 8]
    [moco] = result["results"]
    assert moco["method"] == "moco" and len(moco["ms_channels_last"]) == len(moco["ms_contiguous"]) == 1
    assert moco["contiguous_over_channels_last"] == moco["ms_contiguous"][0] / moco["ms_channels_last"][0]
    assert "contiguous/channels_last" in capsys.readouterr().out
