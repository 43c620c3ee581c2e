"""Every help example that reads a demo run runs as given against what `clsp pipeline --config demo` leaves
behind (issue 27, point 6): the paths, sizes and subsets the examples name are the demo's. The demo is trimmed
to what the examples read (SimCLR + CLSP, one epoch, two sampler steps, its own evaluations off), and each example
gets overrides that shrink its work (a smaller evaluation subset, fewer probe epochs or anchors), never a path,
an image size or the subset a positives store was made from."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from clsp.cli import main

DEMO_TRIM = ["methods=[simclr]", "variants=[clsp]", "~sweep", "floor=false", "pretrain.epochs=1",
             "pretrain.warmup_epochs=0", "synthesis.sampler.steps=2", "jobs=1", "eval.knn=false", "eval.linear=false",
             "eval.embed=false", "eval.hardness=false", "eval.positives=false"]
# command -> (overrides that only shrink the work, the file the example must leave)
CHEAPER = {
    "eval knn": (["--subset", "200"], "runs/demo/pretrain/simclr-clsp/eval/knn/metrics.json"),
    "eval linear": (["--subset", "200", "--epochs", "2"], "runs/demo/pretrain/simclr-clsp/eval/linear/metrics.json"),
    "eval transfer": ([], "runs/demo/pretrain/simclr-clsp/eval/transfer/metrics.json"),
    "eval embed": (["--subset", "200", "--n", "100"], "runs/demo/pretrain/simclr-clsp/eval/embed/tsne.png"),
    "eval hardness": ([], "runs/demo/pretrain/simclr-clsp/eval/hardness/metrics.json"),
    "eval positives": (["settings.n=100", "settings.sweep_n=10", "settings.real_n=500"],
                       "runs/demo-positives/positives_tradeoff.png"),
    "report": ([], "runs/demo/report.html"),
    "pretrain": (["epochs=1", "warmup_epochs=0"], "runs/pretrain-demo/encoder.safetensors"),
}


def demo_examples() -> list[list[str]]:
    """The help examples that read runs/demo, or train from the demo preset."""
    from test_examples import help_examples

    found = [shlex.split(line)[1:] for line in help_examples() if "runs/demo" in line or "--config demo " in line]
    return [words for words in found if words[0] != "pipeline"]     # the pipeline's examples are the demo itself


def command(words: list[str]) -> str:
    return " ".join(words[:2]) if words[0] == "eval" else words[0]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    where = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(where)
        assert main(["pipeline", "--config", "demo", *DEMO_TRIM]) == 0
    yield where
    torch.set_num_threads(threads)


def test_the_help_shows_an_example_for_every_demo_command():
    assert sorted({command(words) for words in demo_examples()}) == sorted(CHEAPER)


@pytest.mark.slow
@pytest.mark.parametrize("words", demo_examples(), ids=command)
def test_a_help_example_runs_against_the_demo_run(demo_run, words, monkeypatch):
    monkeypatch.chdir(demo_run)
    cheaper, leaves = CHEAPER[command(words)]
    assert main([*words, *cheaper]) == 0
    assert (demo_run / leaves).is_file()
