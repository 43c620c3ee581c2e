"""Helpers for the report tests: a run directory in the documented layout, and headless Chromium."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    """The layout Lightning's CSVLogger writes: one header with every key, blanks where not logged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def make_run_dir(root: Path, methods=("simclr", "moco"), variants=("base", "clsp"), paper: str = "",
                 skip: tuple[str, ...] = (), config_extra: dict | None = None, seeds=(0,)) -> Path:
    """A run directory in the layout of clsp.layout.RunLayout, with small real PNGs and CSV logs.
    `skip` names pieces to leave out: 'anchors', 'hardness', 'linear:<run>', 'curves:<run>', ...
    With several seeds, seed s adds s to every accuracy (so a group's std is that of its seeds)."""
    import yaml

    from clsp.layout import RunLayout, RunSpec

    run = root / "run"
    at = RunLayout(run)
    rng = np.random.default_rng(0)
    config = {"dataset": {"name": "fashion-mnist", "subset": 200}, "methods": list(methods), "variants": list(variants),
              "paper": paper, "eval": {"knn": True, "linear": True, "embed": True, "hardness": True, "transfer": []},
              "synthesis": {"k": 2, "w": 0.1}, "seeds": list(seeds)}
    config.update(config_extra or {})
    run.mkdir(parents=True)
    at.config.write_text(yaml.safe_dump(config))
    at.env.write_text(json.dumps({"versions": {"torch": "2.x"}, "git_commit": "abc123", "argv": ["clsp", "pipeline"]}))
    at.timings.write_text(json.dumps({"stages": {"diffusion": {"seconds": 12.5}, "synthesis": {"seconds": 3.0}}}))
    if "anchors" not in skip:
        write_png(at.figure("anchors"), rng.integers(0, 255, (40, 120, 3), dtype=np.uint8))
    if "samples" not in skip:
        write_png(at.samples / "step00001000.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    if "w_sweep" not in skip:
        write_png(at.figure("w_sweep"), rng.integers(0, 255, (60, 120, 3), dtype=np.uint8))
    for (i, method), (j, variant), seed in itertools.product(enumerate(methods), enumerate(variants), seeds):
        name = RunSpec(method, variant, seed, None, len(seeds) > 1).name
        write_encoder_stub(at, name)
        at.pretrain_metrics(name).write_text(json.dumps({"probe_test_acc": 50.0 + i + j + seed, "knn_acc": 55.0}))
        if f"curves:{name}" not in skip:
            rows = [{"step": s, "epoch": s // 5, "train/loss_ssl": 5.0 - 0.1 * s - j} for s in range(10)]
            rows += [{"step": s, "epoch": s // 5, "test/knn_acc": 40.0 + s + 3 * j} for s in (4, 9)]
            if variant != "base":
                rows += [{"step": s, "epoch": s // 5, "train/loss_clsp": 1.0 - 0.05 * s} for s in range(10)]
            write_metrics_csv(at.training_log(name), rows)
        knn = {"kind": "knn", "results": {"best_k": 20, "best": 60.0 + 2 * j + i + seed, "fixed_k": 200,
                                          "fixed": 58.0 + 2 * j + seed}}
        write_json(at.eval_metrics(name, "knn"), knn)
        if f"linear:{name}" not in skip:
            linear = {"kind": "linear", "results": {"top1": 70.0 + 1.5 * j + i + seed, "top5": 99.0}}
            write_json(at.eval_metrics(name, "linear"), linear)
        write_png(at.evaluation(name, "embed") / "tsne.png", rng.integers(0, 255, (50, 50, 3), dtype=np.uint8))
        if "hardness" not in skip:
            write_png(at.evaluation(name, "hardness") / "hardness.png", rng.integers(0, 255, (50, 80, 3), dtype=np.uint8))
    return run


def write_encoder_stub(at, name: str) -> None:
    """A pretraining run's directory with a stand-in encoder file (the report only checks that it is there)."""
    at.pretrain(name).mkdir(parents=True, exist_ok=True)
    at.encoder(name).write_bytes(b"weights")


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def find_chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_args(profile: Path) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}"]


def dump_dom(chromium: str, page: Path, profile: Path, timeout: float = 90) -> str:
    """The DOM after load (scripts run), as headless Chromium serialises it."""
    result = subprocess.run([chromium, *chromium_args(profile), "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def screenshot(chromium: str, page: Path, out: Path, profile: Path, width: int = 1300, height: int = 3000, timeout: float = 90) -> Path:
    result = subprocess.run([chromium, *chromium_args(profile), "--hide-scrollbars", f"--window-size={width},{height}",
                             "--virtual-time-budget=5000", f"--screenshot={out}", page.resolve().as_uri()],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0 and out.is_file(), result.stderr[-2000:]
    return out
