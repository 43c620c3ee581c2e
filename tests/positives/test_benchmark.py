"""benchmarks/synthesize.py --quick runs end to end and records what it measured (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "synthesize.py"


def test_quick_benchmark_runs_and_records(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("synthesize_benchmark", BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--record", "--results", str(tmp_path)]) == 0
    [path] = tmp_path.glob("synthesize-quick-*.json")
    result = json.loads(path.read_text())
    assert result["quick"] and result["device"] and result["date"] and "commit" in result
    assert [r["share_anchor"] for r in result["results"]] == [False, True]
    for r in result["results"]:
        assert r["images_per_s"] > 0 and r["cifar10_hours"] > 0
    assert "images/s" in capsys.readouterr().out
