import numpy as np

from clsp.data.config import DatasetConfig
from clsp.eval.embed import embed_plot, tsne_2d


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
