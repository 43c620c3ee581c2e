"""clsp.benchmark: the timing loop calls fn as asked, and record writes a stamped JSON (no timing asserted)."""

from __future__ import annotations

import json

from clsp.benchmark import device_slug, record, timed


def test_timed_calls_fn_warmup_plus_repeats_times():
    calls = []
    seconds = timed(lambda: calls.append(sum(range(1000))), "cpu", repeats=4, warmup=2)
    assert isinstance(seconds, float) and seconds > 0
    assert len(calls) == 6


def test_record_adds_provenance_and_keeps_fields(tmp_path):
    path = record("demo", {"benchmark": "demo", "images_per_s": 1.5}, tmp_path, device="cpu")
    assert path.parent == tmp_path and path.name.startswith("demo-cpu-") and path.suffix == ".json"
    result = json.loads(path.read_text())
    assert result["benchmark"] == "demo" and result["images_per_s"] == 1.5
    assert result["device"].startswith("cpu") and result["date"][:10] in path.name
    assert "commit" in result and "torch" in result["versions"]
    assert list(tmp_path.iterdir()) == [path]  # nothing left beside it


def test_record_keeps_fields_already_present(tmp_path):
    path = record("demo", {"device": "NVIDIA H100 80GB HBM3", "commit": "abc"}, tmp_path)
    assert path.name.startswith("demo-nvidia-h100-80gb-hbm3-")
    result = json.loads(path.read_text())
    assert result["device"] == "NVIDIA H100 80GB HBM3" and result["commit"] == "abc"


def test_device_slug_cpu():
    assert device_slug("cpu") == "cpu"
