"""The README's own-images recipes, as written, at micro size: a folder of class subfolders without train/
and test/ (a held-out share of each class becomes the test split), and a flat folder (evaluated on a
labelled set the user names, or with the evaluations that need labels skipped and said so). The README's
command lines are read from the README; only the preset (micro.yaml for fashion-mnist), the folders, the
image size and the run directory are swapped."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from clsp.cli import main
from clsp.layout import RunLayout

MICRO = Path(__file__).with_name("micro.yaml")
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
PER_CLASS, CLASSES = 24, 3


def readme_commands() -> list[list[str]]:
    """The `clsp pipeline` lines of the README's "Your own images" section, as argument lists."""
    section = README.split("## Your own images", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1).replace("\\\n", " ")
    return [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("clsp pipeline")]


def at_micro_size(words: list[str], labelled: Path, flat: Path, run: Path) -> list[str]:
    swap = {"fashion-mnist": str(MICRO)}
    out = []
    for word in words:
        word = swap.get(word, word).replace("/path/to/flat-images", str(flat)).replace("/path/to/images", str(labelled))
        word = "dataset.size=16" if word.startswith("dataset.size=") else word
        out.append(f"out_dir={run}" if word.startswith("out_dir=") else word)
    return out + ["dataset.subset=0"]  # micro.yaml's subset is for digits, not these folders


@pytest.fixture(autouse=True)
def one_thread():
    """As the CLI runs under OMP_NUM_THREADS=1 on a shared machine: two threads spin against other jobs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """72 of scikit-learn's digits as 16 px PNGs: in three class subfolders, and flat."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("images")
    labelled, flat = root / "labelled", root / "flat"
    for c in range(CLASSES):
        for i, index in enumerate(np.flatnonzero(digits.target == c)[:PER_CLASS]):
            pixels = np.kron((digits.images[index] * 255 / 16).astype(np.uint8), np.ones((2, 2), np.uint8))
            for folder in (labelled / f"digit{c}", flat):
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).convert("RGB").save(folder / f"{c}-{i:02d}.png")
    return labelled, flat


def test_the_readme_has_both_recipes():
    commands = readme_commands()
    assert len(commands) == 2 and all("dataset.name=folder:/path/to/images" in c for c in commands[:1])
    assert "eval.dataset.name=folder:/path/to/images" in commands[1]


def readme_cpu_command() -> list[str]:
    """The CPU recipe of the README's "Your own images" section (the demo preset on the user's folder)."""
    section = README.split("## Your own images", 1)[1].split("\n## ", 1)[0]
    [line] = [line.strip() for line in section.splitlines() if line.strip().startswith("clsp pipeline --config demo")]
    return shlex.split(line)[1:]


def test_the_readme_cpu_recipe_runs_as_written_with_batches_fitted_to_the_data(folders, tmp_path, caplog):
    """The demo preset on 72 images: its batch of 200 follows the 57 training images (MoCo: 50, a divisor of its
    queue), lr scaled linearly; every stage runs and the report states the fitted batches."""
    labelled, _ = folders
    run = tmp_path / "run"
    words = [w.replace("/path/to/images", str(labelled)) for w in readme_cpu_command()]
    words = [f"out_dir={run}" if w.startswith("out_dir=") else w for w in words]
    with caplog.at_level("INFO", logger="clsp"):
        assert main(words) == 0
    assert "pretraining moco: 57 training images are fewer than one batch of 200: batch_size 50 (a divisor of " \
           "moco.queue_size=1000) and lr 0.075 (0.3 x 50/200)" in caplog.text
    layout = RunLayout(run)
    fitted = json.loads(layout.data.read_text())["batches_fitted"]
    assert sorted(fitted) == ["moco", "moco-clsp", "simclr", "simclr-clsp", "simclr-clsp-start0.5"]  # not the floor
    recorded = yaml.safe_load((layout.pretrain("simclr") / "config.yaml").read_text())
    assert (recorded["batch_size"], recorded["lr"]) == (57, pytest.approx(0.5 * 57 / 200))
    report = layout.report.read_text()
    assert "Every expected piece is present" in report and "pretraining moco-clsp: 57 training images" in report


def test_a_labelled_folder_gets_a_stratified_held_out_test_split(folders, tmp_path):
    labelled, flat = folders
    run = tmp_path / "run"
    assert main(["pipeline", *at_micro_size(readme_commands()[0][1:], labelled, flat, run)]) == 0
    data = json.loads(RunLayout(run).data.read_text())
    held = round(0.2 * PER_CLASS)                                   # 5 of each class's 24
    assert data["train"]["n"] == CLASSES * (PER_CLASS - held) and data["eval"]["test"]["n"] == CLASSES * held
    assert "20% of each class held out with seed 0, dataset.holdout=0.2" in data["eval"]["test"]["source"]
    knn = json.loads(RunLayout(run).eval_metrics("simclr-clsp", "knn").read_text())
    assert knn["results"]["n_test"] == CLASSES * held and knn["results"]["n_train"] == CLASSES * (PER_CLASS - held)
    report = RunLayout(run).report.read_text()
    assert "Every expected piece is present" in report and "20% of each class held out" in report
    assert f"{CLASSES * (PER_CLASS - held)} training images, tested on {CLASSES * held}" in report
    shown = sorted(p.name for p in run.iterdir() if not p.name.startswith("."))   # .lock: the run lock's file
    assert shown == readme_outputs()  # the README's listing of a run is complete


def readme_outputs() -> list[str]:
    """The top-level files and folders of the README's "Outputs" listing of a pipeline run directory."""
    listing = re.search(r"## Outputs.*?```\n(.*?)```", README, flags=re.S).group(1)
    names = set()
    for line in listing.splitlines():
        if line and not line.startswith(" "):  # an indented line continues a description
            first = re.split(r"\s{2,}", line.strip())[0]  # the names column; two spaces start the description
            names |= {name.split("/")[0] for name in first.split()}
    return sorted(names)


def test_a_flat_folder_without_a_labelled_set_skips_what_needs_labels_and_says_so(folders, tmp_path, caplog):
    labelled, flat = folders
    words = [w for w in readme_commands()[1] if not w.startswith("eval.dataset")]
    run = tmp_path / "run"
    with caplog.at_level("INFO", logger="clsp"):
        assert main(["pipeline", *at_micro_size(words[1:], labelled, flat, run)]) == 0
    assert ("pipeline: kNN, linear probe, t-SNE, positives evaluation skipped: folder:" in caplog.text
            and "has no labels; to evaluate, name a labelled set with eval.dataset.name=NAME" in caplog.text)
    assert sorted(json.loads(RunLayout(run).data.read_text())["skipped"]) == ["embed", "knn", "linear", "positives"]
    assert not RunLayout(run).evaluation("simclr", "knn").exists()
    assert RunLayout(run).eval_metrics("simclr-clsp", "hardness").is_file()  # needs no labels
    report = RunLayout(run).report.read_text()
    assert "Every expected piece is present" in report and "Not run: folder:" in report


def test_a_flat_folder_is_evaluated_on_the_labelled_set_it_names(folders, tmp_path):
    labelled, flat = folders
    run = tmp_path / "run"
    cheap = ["variants=[base]", "eval.linear=false", "eval.embed=false", "eval.hardness=false"]  # pretrain + kNN only
    assert main(["pipeline", *at_micro_size(readme_commands()[1][1:], labelled, flat, run), *cheap]) == 0
    knn = json.loads(RunLayout(run).eval_metrics("simclr", "knn").read_text())
    assert knn["dataset"]["name"] == f"folder:{labelled}" and knn["results"]["n_test"] == CLASSES * round(0.2 * PER_CLASS)
    assert json.loads(RunLayout(run).data.read_text())["train"]["labelled"] is False


@pytest.mark.parametrize("overrides, message", [
    (["dataset.name=folder:{labelled}", "dataset.holdout=0"], "no test/ subfolder and dataset.holdout=0"),
    (["dataset.name=folder:{flat}", "eval.dataset.name=folder:{flat}"], "has no labels, and labels are needed here"),
    (["dataset.name=folder:{labelled}", "pretrain.batch_size=100"],
     r"pretraining \S+: folder:\S+ split 'train' has 57 training images, fewer than one batch \(batch_size=100\); "
     "set pretrain.batch_size to at most 57, or pretrain.batch_follows_data=true to fit it to the data"),
    (["dataset.name=folder:{labelled}", "dataset.subset=0", "model_dir={labelled}/none"], "model_dir .* is not a directory"),
])
def test_what_a_run_needs_is_checked_before_its_first_stage(folders, tmp_path, capsys, overrides, message):
    labelled, flat = folders
    words = [o.format(labelled=labelled, flat=flat) for o in overrides]
    assert main(["pipeline", "--config", str(MICRO), f"out_dir={tmp_path / 'run'}", "dataset.subset=0", *words]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()
