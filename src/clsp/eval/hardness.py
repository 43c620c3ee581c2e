"""How hard are the positives? The paper's premise, measured on an encoder's embedding.

For each anchor x (a fixed random subset of the training set), with e(.) the L2-normalised backbone
features (no projector) of the eval view, the cosine similarity between e(x) and:
  (a) augmented:  e(aug(x)), another augmentation of the anchor itself (the method's recipe),
  (b) nn:         its nearest neighbour in the training set, the anchor itself excluded (NNCLR's positive),
  (c) synthetic:  each of its K diffusion-made candidates (CLSP's positives),
  (d) random:     a uniformly drawn other training image (a typical negative).
CLSP claims (c) is harder than (b): lower similarity while keeping the anchor's content.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

KINDS = ("augmented", "nn", "synthetic", "random")


def similarity_summary(values: np.ndarray) -> dict[str, float]:
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return {"mean": float(values.mean()), "std": float(values.std()), "q25": float(q25), "median": float(q50),
            "q75": float(q75), "min": float(values.min()), "max": float(values.max()), "n": int(values.size)}


def hardness_similarities(encoder, train_set, store, anchor_idx: np.ndarray, augment: str = "simclr", seed: int = 0,
                          batch_size: int = 512, progress: bool = True) -> dict[str, np.ndarray]:
    """The four similarity distributions: 'synthetic' is (n, K), the others (n,)."""
    anchor_idx = np.asarray(anchor_idx)
    bank = F.normalize(encoder.features(train_set, batch_size=batch_size, progress=progress), dim=1)  # (N, d)
    anchors = bank[torch.as_tensor(anchor_idx, device=bank.device)]
    anchor_images = train_set.images_at(anchor_idx)

    # (a) another augmentation of itself; seeded views, without touching the caller's RNG state
    devices = [bank.device] if bank.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        views = F.normalize(encoder.features(anchor_images, recipe=augment, batch_size=batch_size, progress=False), dim=1)
    augmented = (anchors * views).sum(1)

    # (b) nearest neighbour in the training set, excluding the anchor itself
    nn_sim = torch.empty(len(anchor_idx), device=bank.device)
    for start in range(0, len(anchor_idx), 256):
        sims = anchors[start:start + 256] @ bank.T
        rows = torch.arange(len(sims), device=bank.device)
        sims[rows, torch.as_tensor(anchor_idx[start:start + 256], device=bank.device)] = -float("inf")
        nn_sim[start:start + 256] = sims.max(1).values

    # (c) every synthetic candidate of the anchor
    synthetic = []
    for start in range(0, len(anchor_idx), max(1, batch_size // 8)):
        chunk = anchor_idx[start:start + max(1, batch_size // 8)]
        cands = torch.as_tensor(store.candidates(chunk))                                   # (b, K, H, W, 3)
        b, k = cands.shape[:2]
        feats = F.normalize(encoder.features(cands.reshape(b * k, *cands.shape[2:]), batch_size=batch_size,
                                             progress=False), dim=1).view(b, k, -1)
        synthetic.append((feats * anchors[start:start + b, None]).sum(-1))

    # (d) a uniformly drawn other image: j in [0, N-1), shifted past the anchor's own index
    other = np.random.default_rng(seed).integers(0, len(bank) - 1, size=len(anchor_idx))
    other = other + (other >= anchor_idx)
    random = (anchors * bank[torch.as_tensor(other, device=bank.device)]).sum(1)

    out = {"augmented": augmented, "nn": nn_sim, "synthetic": torch.cat(synthetic), "random": random}
    return {k: v.float().cpu().numpy() for k, v in out.items()}


def plot_hardness(sims: dict[str, np.ndarray], path: str | Path, title: str) -> Path:
    """Overlaid density histograms of the four distributions, each labelled with its mean."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from clsp.grids import save_figure

    everything = np.concatenate([v.ravel() for v in sims.values()])
    lo, hi = float(everything.min()), float(everything.max())
    pad = max(1e-3, 0.02 * (hi - lo))
    bins = np.linspace(lo - pad, min(1.0, hi + pad), 61)
    fig = Figure(figsize=(7, 4.2), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    labels = {"augmented": "(a) another augmentation", "nn": "(b) nearest neighbour", "synthetic": "(c) synthetic candidates",
              "random": "(d) random image"}
    for name in KINDS:
        v = sims[name].ravel()
        ax.hist(v, bins=bins, density=True, alpha=0.45, label=f"{labels[name]}  (mean {v.mean():.3f})")
    ax.set_xlabel("cosine similarity to the anchor")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)


def hardness_eval(encoder_path, dataset_cfg, positives, out_dir=None, n: int = 1000, augment: str | None = None,
                  seed: int = 0, batch_size: int = 512, device=None, store=None) -> dict:
    """Similarity distributions of the four kinds of positive; writes hardness.png and metrics.json.

    The dataset is the training split the positives store was made from (as configured, not resized
    to the encoder: the store checks it holds exactly these images). `store` may be given already open.
    """
    from clsp.config import to_dict
    from clsp.data.config import load_split
    from clsp.errors import UserError
    from clsp.eval.features import open_encoder
    from clsp.eval.metrics import dataset_record, run_evaluation
    from clsp.io import hash_json

    if n < 1:
        raise UserError(f"hardness needs at least 1 anchor: --n (eval.hardness_n) must be >= 1, got {n}")
    encoder, out = open_encoder(encoder_path, "hardness", out_dir, device)
    augment = augment or encoder.meta.get("augment") or ("moco" if encoder.meta.get("method") == "moco" else "simclr")
    train = load_split(dataset_cfg, dataset_cfg.train_split)
    if store is None:
        from clsp.positives.store import PositivesStore

        store = PositivesStore.open(positives, train)
    if len(train) < 2:
        raise UserError(f"{train.name} {train.split} has {len(train)} image(s); hardness needs at least 2")
    config = {"kind": "hardness", "encoder": str(encoder.path), "dataset": to_dict(dataset_cfg),
              "positives": str(positives), "n": n, "augment": augment, "seed": seed}
    manifest = getattr(store, "manifest", None)
    inputs = {"encoder": encoder.record()["sha256"], "train": train.fingerprint,
              "positives": hash_json({k: manifest.get(k) for k in ("dataset", "model_hash", "generation")})
              if manifest else str(positives)}

    def compute() -> dict:
        anchor_idx = np.sort(np.random.default_rng(seed).permutation(len(train))[:n])
        sims = hardness_similarities(encoder, train, store, anchor_idx, augment, seed, batch_size)
        summary = {name: similarity_summary(sims[name]) for name in KINDS}
        synthetic_mean = sims["synthetic"].mean(1)
        title = f"{encoder.meta.get('method', 'encoder')} on {train.name}: similarity of positives to their anchor"
        plot_hardness(sims, out / "hardness.png", title)
        return {"similarity": summary, "augment": augment, "n_anchors": int(len(anchor_idx)),
                "k": int(sims["synthetic"].shape[1]), "figure": "hardness.png",
                # the premise, per anchor: are its synthetic positives harder (less similar) than its NN?
                "synthetic_harder_than_nn": float((synthetic_mean < sims["nn"]).mean())}

    return run_evaluation(out, "hardness", config, inputs, compute, hardness_table, encoder.record(),
                          dataset_record(train), files=["hardness.png"], positives=str(positives))


def hardness_table(results: dict) -> str:
    from clsp.eval.metrics import format_table

    rows = [[name, s["mean"], s["q25"], s["median"], s["q75"], s["n"]] for name, s in results["similarity"].items()]
    title = (f"hardness: cosine similarity to the anchor (synthetic below NN for "
             f"{100 * results['synthetic_harder_than_nn']:.1f}% of anchors)")
    return format_table(["positive", "mean", "q25", "median", "q75", "n"], rows, title, digits=3)

