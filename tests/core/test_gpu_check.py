"""benchmarks/gpu_check.py, the lent GPU's one command: its steps at the dry run's micro sizes (on the CPU, with
this interpreter: the kit's offline install is `make gpu-check-dry-run`'s job), its deadline and its packing."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def gpu_check(tmp_path: Path, *args: str, timeout: int = 600) -> tuple[subprocess.CompletedProcess, dict, Path]:
    out = tmp_path / "out"
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--in-place", "--out", str(out),
                           "--work", str(tmp_path / "work"), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    return done, json.loads((out / "summary.json").read_text()), out


def steps(summary: dict) -> dict[str, dict]:
    return {s["name"]: s for s in summary["steps"]}


def test_a_deadline_too_short_skips_every_step_saying_why_and_still_packs(tmp_path):
    done, summary, out = gpu_check(tmp_path, "--deadline", "15")
    assert done.returncode == 0, done.stdout + done.stderr
    ran = steps(summary)
    assert set(ran) >= {"peak", "tests", "bench:diffusion", "bench:synthesize", "bench:pretrain-compiled", "study"}
    for name, step in ran.items():
        assert step["status"] == "skipped", step
        assert step["detail"], name
    assert "s left before the deadline, the step needs at least" in ran["study"]["detail"]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.log", "results.tar.gz", "summary.json"]


@pytest.mark.slow
def test_the_dry_runs_micro_steps_run_and_pack_their_figures(tmp_path):
    done, summary, out = gpu_check(tmp_path, "--variants", "base,clsp,nosuchvariant")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    ran = steps(summary)
    skipped = {n for n, s in ran.items() if s["status"] == "skipped"}
    assert skipped == {"install", "bench:pretrain-compiled"}, ran       # --in-place; compiling is the GPU's
    assert all(s["status"] == "ok" for n, s in ran.items() if n not in skipped), ran
    assert summary["peak"]["tflops"] > 0
    bench = summary["benchmarks"]
    assert bench["augment"]["augment_images_per_s"] > 0
    assert 0 < bench["diffusion"]["train_fraction_of_peak"]
    assert bench["synthesize"]["shared_anchor_images_per_s"] > 0
    assert bench["pretrain-eager"]["projected_cifar10_epoch_s"] == pytest.approx(
        bench["pretrain-eager"]["step_s"] * 1563)                         # 50,000 / batch 32 (the quick size)
    assert summary["tests"]["failed"] == 0 and summary["tests"]["cases"]  # on a CPU every GPU test is skipped
    study = summary["study"]
    assert study["variants"] == ["base", "clsp"]
    assert any("'nosuchvariant' skipped" in note for note in summary["notes"])
    assert {"simclr-base", "simclr-clsp"} <= set(study["encoders"])
    assert all({"knn", "linear"} <= set(kinds) for name, kinds in study["encoders"].items() if "floor" not in name)
    assert study["positives"], "clsp eval positives wrote nothing"
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.startswith("results/bench/synthesize/") and n.endswith(".json") for n in names)
    assert "results/tests-gpu.xml" in names and "results/summary.json" in names
    assert not any(n.endswith((".ckpt", ".safetensors", ".npy")) for n in names)
    assert len(list(out.iterdir())) <= 8
