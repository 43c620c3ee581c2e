import sys

import numpy as np
import pytest

from clsp.data.config import DatasetConfig
from clsp.eval.embed import embed_plot, tsne_2d, umap_2d


def test_tsne_separates_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20)) * 5
    labels = np.repeat(np.arange(3), 30)
    coords, kl = tsne_2d(centres[labels] + rng.normal(size=(90, 20)) * 0.1, perplexity=10, max_iter=500)
    assert coords.shape == (90, 2) and np.isfinite(kl)
    means = np.stack([coords[labels == c].mean(0) for c in range(3)])
    nearest = np.linalg.norm(coords[:, None] - means[None], axis=2).argmin(1)
    assert np.array_equal(nearest, labels)  # every point lies nearest to its own cluster's centre


def test_embed_plot_writes_figure_and_metrics_and_says_where(encoder_file, tmp_path, capsys):
    png = tmp_path / "figures" / "digits-tsne.png"  # a figure path of the user's choosing
    metrics = embed_plot(encoder_file, DatasetConfig(name="digits"), tmp_path / "embed", n=60, figure=png,
                         perplexity=10, device="cpu", max_iter=300)
    assert metrics["results"]["figure"] == str(png.resolve())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert metrics["kind"] == "embed" and metrics["results"]["n"] == 60 and metrics["dataset"]["split"] == "test"
    assert not list((tmp_path / "embed").glob(".*.tmp"))  # atomic writes leave nothing behind
    assert f"wrote {tmp_path / 'embed' / 'metrics.json'}, {png.resolve()}" in capsys.readouterr().out


def test_embed_plot_reads_back_a_finished_run_and_records_tsne(encoder_file, tmp_path, capsys):
    first = embed_plot(encoder_file, DatasetConfig(name="digits"), tmp_path, n=30, perplexity=5, device="cpu", max_iter=250)
    assert first["results"]["method"] == "tsne" and first["results"]["figure"] == "tsne.png"
    assert (tmp_path / "tsne.png").is_file() and "t-SNE" in capsys.readouterr().out
    again = embed_plot(encoder_file, DatasetConfig(name="digits"), tmp_path, n=30, perplexity=5, device="cpu", max_iter=250)
    assert again["results"] == first["results"] and "is up to date" in capsys.readouterr().out


@pytest.mark.slow  # numba compiles umap-learn's layout on its first call in a process: about 25 s on one thread
def test_umap_separates_separated_clusters_and_names_itself(encoder_file, tmp_path):
    pytest.importorskip("umap")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20)) * 5
    labels = np.repeat(np.arange(3), 30)
    points = centres[labels] + rng.normal(size=(90, 20)) * 0.1
    coords = umap_2d(points, n_neighbors=10, seed=0)
    assert coords.shape == (90, 2) and np.isfinite(coords).all()
    means = np.stack([coords[labels == c].mean(0) for c in range(3)])
    nearest = np.linalg.norm(coords[:, None] - means[None], axis=2).argmin(1)
    assert np.array_equal(nearest, labels)
    assert np.array_equal(coords, umap_2d(points, n_neighbors=10, seed=0))  # a fixed seed: the same layout

    metrics = embed_plot(encoder_file, DatasetConfig(name="digits"), tmp_path, n=40, device="cpu", method="umap",
                         n_neighbors=8, min_dist=0.2, seed=3)
    assert metrics["results"] == {"method": "umap", "figure": "umap.png", "n": 40, "n_neighbors": 8, "min_dist": 0.2,
                                  "seed": 3}
    assert (tmp_path / "umap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (tmp_path / "tsne.png").exists()


def test_umap_without_umap_learn_is_one_line_and_exit_2(encoder_file, tmp_path, monkeypatch, capsys):
    from clsp.cli import main

    monkeypatch.setitem(sys.modules, "umap", None)  # import umap raises ImportError, as when it is not installed
    out = tmp_path / "embed"
    assert main(["eval", "embed", "--ckpt", str(encoder_file), "--dataset", "digits", "--method", "umap",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["clsp: error: --method umap needs umap-learn, which is not installed: pip install 'clsp[umap]' "
                   "(or use --method tsne)"]
    assert not out.exists()
