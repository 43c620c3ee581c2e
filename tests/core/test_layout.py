"""The run directory's layout, written out by hand as docs/ARCHITECTURE.md draws it: RunLayout is the only
place in src/ that spells these paths, so this is where a change to one of them shows."""

from pathlib import Path

from clsp.layout import RunLayout, RunSpec, store_name


def test_every_path_of_a_run_directory():
    at = RunLayout("/runs/demo")
    root = Path("/runs/demo")
    expected = {
        at.config: "config.yaml", at.env: "env.json", at.data: "data.json", at.timings: "timings.json",
        at.report: "report.html", at.stage_record("pretrain/simclr-clsp"): "stages/pretrain__simclr-clsp.json",
        at.stage_record("diffusion", ".yaml"): "stages/diffusion.yaml",
        at.diffusion: "diffusion", at.model: "diffusion/model", at.samples: "diffusion/samples",
        at.store(): "positives", at.store(store_name(("w", 0.3))): "positives-w0.3",
        at.figure("anchors"): "figures/anchors.png", at.figure("w_sweep"): "figures/w_sweep.png",
        at.pretrain_root: "pretrain", at.pretrain("simclr-clsp-seed1"): "pretrain/simclr-clsp-seed1",
        at.encoder("moco"): "pretrain/moco/encoder.safetensors", at.pretrain_metrics("moco"): "pretrain/moco/metrics.json",
        at.training_log("moco"): "pretrain/moco/logs/metrics.csv",
        at.evaluation("moco-clsp", "knn"): "eval/moco-clsp/knn", at.eval_metrics("moco", "linear"): "eval/moco/linear/metrics.json",
        at.store_evaluation(): "eval/positives", at.store_metrics("positives-k4"): "eval/positives-k4/metrics.json",
    }
    for path, relative in expected.items():
        assert path == root / relative
        assert at.relative(path) == relative


def test_a_runs_store_is_a_folder_of_the_run():
    at = RunLayout(Path("run"))
    assert at.store(RunSpec("simclr", "clsp", sweep=("k", 4.0)).store) == Path("run/positives-k4")
    assert at.store(RunSpec("simclr", "clsp", sweep=("weight", 0.5)).store) == Path("run/positives")
