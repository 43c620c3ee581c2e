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
    assert "kept for the study" in ran["peak"]["detail"]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.log", "results.tar.gz", "summary.json"]


def test_the_study_config_loads_at_both_sizes_with_the_variants_clsp_knows(tmp_path):
    """benchmarks/gpu_study.yaml is only run on a lent GPU: a bad key there would cost the GPU's minutes."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_check
    from clsp.config import load_config
    from clsp.pipeline import VARIANTS, PipelineConfig

    variants = [v for v in ("base", "clsp", "oracle") if v in VARIANTS]
    for name, profile in gpu_check.PROFILES.items():
        cfg = load_config(PipelineConfig, REPO / "benchmarks" / "gpu_study.yaml",
                          [f"out_dir={tmp_path / name}", f"variants=[{','.join(variants)}]", *profile.study_overrides])
        assert cfg.dataset.name == "fashion-mnist" and cfg.variants == variants
        assert cfg.trainer.accelerator == ("gpu" if name == "gpu" else "cpu")
        assert (cfg.dataset.size or 32) == (32 if name == "gpu" else 16)
        assert {r.variant for r in cfg.planned_runs() if r.method == "simclr"} == set(variants)


@pytest.mark.slow
def test_the_dry_runs_micro_steps_run_and_pack_their_figures(tmp_path):
    """The dry run's steps with this interpreter (synthesize.py and step_overhead.py have their own tests)."""
    chosen = "peak,tests,bench:augment,bench:diffusion,bench:pretrain-eager,study"
    done, summary, out = gpu_check(tmp_path, "--steps", chosen, "--variants", "base,clsp,nosuchvariant",
                                   "--deadline", "900")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    ran = steps(summary)
    assert {n for n, s in ran.items() if s["status"] == "ok"} == set(chosen.split(",")), ran
    assert ran["bench:synthesize"]["detail"] == "not among --steps"
    assert summary["peak"]["tflops"] > 0
    bench = summary["benchmarks"]
    assert bench["augment"]["augment_images_per_s"] > 0
    assert bench["diffusion"]["train_fraction_of_peak"] > 0
    assert bench["pretrain-eager"]["projected_cifar10_epoch_s"] == pytest.approx(
        bench["pretrain-eager"]["step_s"] * 3125)                         # 50,000 / batch 16 (the dry run's size)
    assert summary["tests"]["failed"] == 0 and summary["tests"]["cases"]  # on a CPU every GPU test is skipped
    study = summary["study"]
    assert study["variants"] == ["base", "clsp"]
    assert any("'nosuchvariant' skipped" in note for note in summary["notes"])
    encoders = study["encoders"]
    assert set(encoders) == {"simclr", "simclr-clsp"}
    assert all(0 <= kinds["knn"]["best"] <= 100 and "linear" in kinds for kinds in encoders.values())
    assert "ceiling" in study["positives"]["positives"]                  # clsp eval positives ran on the store
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.startswith("results/bench/diffusion/") and n.endswith(".json") for n in names)
    assert {"results/tests-gpu.xml", "results/summary.json", "results/study/eval/positives/metrics.json"} <= set(names)
    assert not any(n.endswith((".ckpt", ".safetensors", ".npy")) for n in names)
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.log", "results.tar.gz", "summary.json"]
