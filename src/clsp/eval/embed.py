"""A 2-D embedding of an encoder's test features, coloured by class: does the embedding separate the classes?

Features are L2-normalised first (the geometry the contrastive loss and the kNN probe use), then
embedded in 2-D by scikit-learn's t-SNE (PCA initialisation, a fixed random_state) or by UMAP (umap-learn,
the optional extra `clsp[umap]`; a fixed random_state, hence one thread). The figure is drawn with
matplotlib's Agg canvas (no display needed) and written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clsp.eval.config import EMBED_METHODS

TITLES = {"tsne": "t-SNE", "umap": "UMAP"}


def _normalised(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def tsne_2d(features: np.ndarray, perplexity: float = 30.0, seed: int = 0, max_iter: int = 1000) -> tuple[np.ndarray, float]:
    """(n, 2) t-SNE coordinates of L2-normalised features and the final KL divergence."""
    from sklearn.manifold import TSNE

    x = _normalised(features)
    perplexity = min(perplexity, max(1.0, (len(x) - 1) / 3))  # t-SNE needs perplexity < n
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max_iter)
    return tsne.fit_transform(x.astype(np.float32)), float(tsne.kl_divergence_)


def import_umap():
    """umap-learn's module, or one line saying how to install it."""
    from clsp.errors import UserError

    try:
        import umap
    except ImportError:
        raise UserError("--method umap needs umap-learn, which is not installed: pip install 'clsp[umap]' "
                        "(or use --method tsne)") from None
    return umap


def umap_2d(features: np.ndarray, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0) -> np.ndarray:
    """(n, 2) UMAP coordinates of L2-normalised features (euclidean on the sphere: the cosine geometry).
    `n_neighbors` is capped below n; a fixed seed makes umap-learn run on one thread, reproducibly."""
    umap = import_umap()
    x = _normalised(features).astype(np.float32)
    reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(n_neighbors, len(x) - 1)), min_dist=min_dist,
                        random_state=seed, n_jobs=1)
    return np.asarray(reducer.fit_transform(x))


def plot_embedding(coords: np.ndarray, labels: np.ndarray, class_names: list[str], path: str | Path, title: str) -> Path:
    """A scatter plot coloured by class with a legend of class names, written atomically (format from the suffix)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from clsp.grids import save_figure

    classes = np.unique(labels)
    cmap = "tab10" if len(class_names) <= 10 else "tab20" if len(class_names) <= 20 else "turbo"
    fig = Figure(figsize=(8, 6.5), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    palette = matplotlib.colormaps[cmap].resampled(max(len(class_names), 1))
    for c in classes:
        sel = labels == c
        ax.scatter(coords[sel, 0], coords[sel, 1], s=float(np.clip(4000 / len(coords), 3, 20)), color=palette(int(c)), label=class_names[int(c)], alpha=0.8,
                   linewidths=0)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=3, frameon=False,
              ncol=1 if len(classes) <= 25 else 2)
    fig.tight_layout()
    return save_figure(fig, path)


def embed_plot(encoder_path, dataset_cfg, out_dir=None, n: int = 2000, figure=None, perplexity: float = 30.0,
               seed: int = 0, device=None, max_iter: int = 1000, method: str = "tsne", n_neighbors: int = 15,
               min_dist: float = 0.1) -> dict:
    """A t-SNE or UMAP (`method`) of `n` test images (a fixed random subset): the figure (default
    out_dir/tsne.png or umap.png) and out_dir/metrics.json, whose `results.figure` is the figure's path
    relative to out_dir when inside it. `perplexity` and `max_iter` are t-SNE's, `n_neighbors` and `min_dist` UMAP's."""
    from clsp.config import to_dict
    from clsp.data.config import load_split
    from clsp.errors import UserError
    from clsp.eval.features import open_encoder
    from clsp.eval.metrics import dataset_record, run_evaluation

    if method not in EMBED_METHODS:
        raise UserError(f"--method must be one of {', '.join(EMBED_METHODS)}, got {method!r}")
    if n < 5:
        raise UserError(f"--n must be at least 5 for a {TITLES[method]}, got {n}")
    if method == "umap":
        import_umap()                      # before any work
    encoder, out = open_encoder(encoder_path, "embed", out_dir, device)
    figure_path = Path(figure) if figure is not None else out / f"{method}.png"
    figure_name = str(figure_path.resolve().relative_to(out.resolve())) if figure_path.resolve().is_relative_to(out.resolve()) \
        else str(figure_path.resolve())
    data_cfg = encoder.dataset_config(dataset_cfg)
    test = load_split(data_cfg, data_cfg.test_split)
    if test.labels is None:
        raise UserError(f"{test.name} {test.split} has no labels to colour the embedding by")
    settings = {"perplexity": perplexity, "max_iter": max_iter} if method == "tsne" else \
        {"n_neighbors": n_neighbors, "min_dist": min_dist}
    config = {"kind": "embed", "method": method, "encoder": str(encoder.path), "dataset": to_dict(data_cfg), "n": n,
              "seed": seed, "figure": figure_name, **settings}
    inputs = {"encoder": encoder.record()["sha256"], "test": test.fingerprint}

    def compute() -> dict:
        idx = np.sort(np.random.default_rng(seed).permutation(len(test))[:n])
        subset = _in_memory(test, idx)
        feats = encoder.features(subset).cpu().numpy()
        results = {"method": method, "figure": figure_name, "n": int(len(idx)), "seed": seed}
        if method == "tsne":
            coords, results["kl_divergence"] = tsne_2d(feats, perplexity, seed, max_iter)
            results["perplexity"] = perplexity
        else:
            coords = umap_2d(feats, n_neighbors, min_dist, seed)
            results.update(n_neighbors=min(n_neighbors, len(idx) - 1), min_dist=min_dist)
        labels = np.asarray(subset.labels)
        title = (f"{TITLES[method]} of {encoder.meta.get('method', 'encoder')} features: {test.name} {test.split} "
                 f"(n={len(idx)})")
        plot_embedding(coords, labels, list(test.classes), figure_path, title)
        return results

    return run_evaluation(out, "embed", config, inputs, compute, embed_table, encoder.record(), dataset_record(test),
                          files=[figure_name])


def embed_table(results: dict) -> str:
    from clsp.eval.metrics import format_table

    method = results.get("method", "tsne")
    rows = [["points", results["n"]]]
    if method == "tsne":
        rows.append(["KL divergence", results["kl_divergence"]])
    else:
        rows += [["n_neighbors", results["n_neighbors"]], ["min_dist", results["min_dist"]]]
    return format_table([TITLES[method], "value"], rows + [["figure", results["figure"]]])


def _in_memory(ds, idx: np.ndarray):
    """An in-memory ImageSet of a few images of a set (read from disk when it streams)."""
    from clsp.data.sets import ImageSet

    return ImageSet(ds.name, ds.split, ds.images_at(idx), ds.labels[idx], list(ds.classes), ds.source, ds.mean, ds.std)
