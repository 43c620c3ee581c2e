"""How good are the positives? `clsp eval positives`: the store judged by a reference classifier.

The method's promise is a candidate that keeps its anchor's content and changes its style. Judged by
the reference classifier of `clsp.eval.reference` (trained on the real labelled images):

  agreement     share of candidates whose predicted class is their anchor's label (chance 1/C); beside it
                the same share for real test images (the judge's ceiling: its test accuracy) and for
                plain samples (w = 1: the anchor has no say, so this is near chance)
  frechet       Frechet distance between reference features of candidates and of real training images;
                beside it real test vs real train (the floor) and plain samples vs real train
  pixels        share of pixels at 0 and at 255, flat (constant) images, and for stores of RGB images of
                grey data the mean spread between channels: each beside the real images' own
  diversity     mean cosine distance between the K candidates of one anchor, beside the distance between
                two SimCLR augmentations of the anchor
  hardness      cosine similarity to the anchor of its candidates, of its nearest real neighbour and of a
                random real image, in the reference feature space
  w sweep       (with the diffusion model) agreement, hardness and diversity of fresh candidates at each w:
                the trade-off the method lives on, as one figure
  layers sweep  the same at the store's w for each interpolation depth (1 = the paper's bottleneck only)
  start sweep   the same for each partial-noise start s (`sampler.start`), at the store's w and at each w of
                `sweep_start_w` (w = 1: SDEdit from the anchor, no interpolation)
  floor sweep   the same for the label-free per-candidate start (`clsp.positives.strength`) at each similarity floor
  trade-off     agreement against hardness (cosine to the anchor in the judge's space), one curve per generator,
                beside two augmentations of the anchor and its nearest real image (each with its own agreement):
                the figure a user picks a generator and a setting from (positives_tradeoff.png)

Anchors are a fixed random subset of the training split; every number says how many images stand behind it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from clsp.eval.config import PositivesEvalConfig
from clsp.eval.reference import Reference
from clsp.layout import POSITIVES_FIGURE as FIGURE
from clsp.layout import TRADEOFF_FIGURE


# -- the measures, each a pure function of arrays ----------------------------------------------------

def agreement(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Percent of predictions equal to their label."""
    return float((np.asarray(predicted) == np.asarray(labels)).mean() * 100)


NEAR = 4        # levels of 255: a background this close to black looks black; beyond it, grain shows


def pixel_shares(images: np.ndarray) -> dict:
    """Share (percent) of pixel values at 0 and at 255, and within NEAR levels of each, of constant images, and the
    mean absolute spread between channels (0 for grey images however they are stored).

    The exact shares test saturation; the near ones tell a background off black by a level or two (a diffusion
    model's sub-visible error: it makes exact 0 rare even where the image looks black) from visible grain.
    """
    images = np.asarray(images)
    flat = images.reshape(len(images), -1)
    spread = 0.0
    if images.shape[-1] == 3:
        c = images.astype(np.int16)
        spread = float(np.mean(np.abs(c[..., 0] - c[..., 1]) + np.abs(c[..., 1] - c[..., 2]) + np.abs(c[..., 0] - c[..., 2])) / 3)
    return {"at_0": float((images == 0).mean() * 100), "at_255": float((images == 255).mean() * 100),
            "near_0": float((images <= NEAR).mean() * 100), "near_255": float((images >= 255 - NEAR).mean() * 100),
            "constant": float((flat.min(1) == flat.max(1)).mean() * 100), "channel_spread": spread, "n": int(len(images))}


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    from clsp.eval.fid import feature_statistics, frechet_distance

    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


def mean_pairwise_distance(features: np.ndarray) -> float:
    """Mean cosine distance between the K (L2-normalised) features of each anchor: (n, K, d) -> scalar."""
    f = np.asarray(features)
    k = f.shape[1]
    if k < 2:
        return float("nan")
    sims = np.einsum("nid,njd->nij", f, f)
    off = sims[:, ~np.eye(k, dtype=bool)]
    return float((1.0 - off).mean())


def nearest_neighbour_similarity(anchor_feats: np.ndarray, bank: np.ndarray, exclude: np.ndarray, index: bool = False):
    """Cosine similarity of each anchor to its nearest bank entry, the entry `exclude[i]` (itself) left out
    (with index=True: and that entry's position in the bank)."""
    sims = anchor_feats @ bank.T
    rows = np.arange(len(sims))
    valid = exclude >= 0
    sims[rows[valid], exclude[valid]] = -np.inf
    nearest = sims.argmax(1)
    return (sims[rows, nearest], nearest) if index else sims[rows, nearest]


# -- the evaluation --------------------------------------------------------------------------------

class _Judge:
    """The reference classifier with the real images it compares against (train subset, test split)."""

    def __init__(self, reference: Reference, train, test, cfg: PositivesEvalConfig) -> None:
        self.reference, self.train = reference, train
        rng = np.random.default_rng(cfg.seed)
        self.real_idx = np.sort(rng.permutation(len(train))[: cfg.real_n])
        real = train.images_at(self.real_idx)
        self.real_pred, self.real_feats = reference.predict(real)
        self.real_labels = train.labels[self.real_idx]
        self.real_raw = reference.raw_features(real)
        test_pred, _ = reference.predict(test.images_at(np.arange(len(test))))
        self.test_agreement = agreement(test_pred, test.labels)
        self.test_raw = reference.raw_features(test.images_at(np.arange(min(cfg.real_n, len(test)))))
        self.real_pixels = pixel_shares(real)
        self.channels = train.channels

    def judge(self, anchor_idx: np.ndarray, candidates: np.ndarray, seed: int, with_nn: bool = True) -> dict:
        """Every measure for candidates (n, K, H, W, C) of the anchors at `anchor_idx`."""
        n, k = candidates.shape[:2]
        labels = self.train.labels[anchor_idx]
        flat = candidates.reshape(n * k, *candidates.shape[2:])
        pred, feats = self.reference.predict(flat)
        _, anchor_feats = self.reference.predict(self.train.images_at(anchor_idx))
        feats = feats.reshape(n, k, -1)
        out = {
            "agreement": agreement(pred, np.repeat(labels, k)),
            "agreement_per_class": _per_class(pred, np.repeat(labels, k), len(self.train.classes)),
            "diversity": mean_pairwise_distance(feats),
            "similarity": {"synthetic": float(np.einsum("nkd,nd->nk", feats, anchor_feats).mean())},
            "pixels": pixel_shares(flat),
            "n_anchors": int(n), "k": int(k),
        }
        if with_nn:
            out["frechet"] = frechet(self.reference.raw_features(flat), self.real_raw)
            position = {int(j): i for i, j in enumerate(self.real_idx)}       # anchors inside the bank are left out
            exclude = np.array([position.get(int(a), -1) for a in anchor_idx])
            nearest_sim, nearest = nearest_neighbour_similarity(anchor_feats, self.real_feats, exclude, index=True)
            out["similarity"]["nearest_real"] = float(nearest_sim.mean())
            other = np.random.default_rng(seed).integers(0, len(self.real_idx), size=n)
            out["similarity"]["random_real"] = float((anchor_feats * self.real_feats[other]).sum(1).mean())
            judged = [self.reference.predict(self._augment(anchor_idx, seed + i)) for i in range(2)]
            views = [f for _, f in judged]
            out["similarity"]["augmented"] = float((anchor_feats * views[0]).sum(1).mean())
            out["augmentation_distance"] = float(1.0 - (views[0] * views[1]).sum(1).mean())
            # the reference marks of the trade-off: each with its hardness and how often it keeps the anchor's class
            out["marks"] = {
                "two_augmentations": {"similarity": float((views[0] * views[1]).sum(1).mean()),
                                      "agreement": agreement(np.concatenate([p for p, _ in judged]), np.tile(labels, 2))},
                "nearest_real": {"similarity": float(nearest_sim.mean()),
                                 "agreement": agreement(self.real_labels[nearest], labels)}}
        return out

    def _augment(self, anchor_idx: np.ndarray, seed: int) -> np.ndarray:
        """A SimCLR view of each anchor, back as uint8 in the anchors' channels: the variation the encoder's
        own recipe already gives, the yardstick of the candidates' diversity."""
        from clsp.data.augment import make_augment

        images = torch.from_numpy(self.train.images_at(anchor_idx))
        augment = make_augment("simclr", images.shape[1], (0.5,) * 3, (0.5,) * 3)    # -> [-1, 1], 3 channels
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            x = augment(images)
        x = x[:, : self.channels] if self.channels == 1 else x
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _per_class(pred: np.ndarray, labels: np.ndarray, classes: int) -> list:
    return [float((pred[labels == c] == c).mean() * 100) if (labels == c).any() else None for c in range(classes)]


def evaluate_positives(store, train, test, cfg: PositivesEvalConfig, model=None, sampler=None, reference=None,
                       progress: bool = True) -> dict:
    """All results of the evaluation (no files): `model` is (unet, scheduler_config) for the w sweep,
    `sampler` the SamplerConfig the sweep varies w of (default: the store's own settings)."""
    from clsp.eval.reference import reference_classifier

    reference = reference or reference_classifier(train, test, cfg.reference)
    judge = _Judge(reference, train, test, cfg)
    rng = np.random.default_rng(cfg.seed)
    anchor_idx = np.sort(rng.permutation(len(train))[: cfg.n])
    stored = judge.judge(anchor_idx, np.asarray(store.candidates(anchor_idx)), cfg.seed)
    results = {
        "reference": {k: reference.record[k] for k in ("test_accuracy", "train_images", "test_images", "recipe")},
        "chance": 100.0 / len(train.classes),
        "ceiling": judge.test_agreement,
        "store": {**stored, "w": store.manifest["generation"]["sampler"]["w"],
                  "sampler": store.manifest["generation"]["sampler"], "strength": _store_strength(store, anchor_idx)},
        "real": {"pixels": judge.real_pixels, "frechet_test_vs_train": frechet(judge.test_raw, judge.real_raw),
                 "n": int(len(judge.real_idx))},
        "sweep": [],
        "layers_sweep": [],
        "start_sweep": [],
        "floor_sweep": [],
    }
    if model is not None:
        few = anchor_idx[: cfg.sweep_n]
        results["sweep"] = [{"w": w, **_fresh(judge, few, model, dataclasses.replace(sampler, w=w), cfg, w == 1.0)}
                            for w in sorted(set(float(w) for w in cfg.sweep_w))]
        results["layers_sweep"] = [{"layers": n, **_fresh(judge, few, model, dataclasses.replace(sampler, layers=n), cfg)}
                                   for n in sorted(set(int(n) for n in cfg.sweep_layers))]
        steps_ok = lambda s: s * sampler.steps >= 1 - 1e-9      # noqa: E731  (a start that leaves a step)
        results["start_sweep"] = [
            {"w": w, "start": s, **_fresh(judge, few, model, dataclasses.replace(sampler, w=w, start=s), cfg)}
            for w in sorted(set(float(w) for w in cfg.sweep_start_w or [sampler.w]))
            for s in sorted(set(float(s) for s in cfg.sweep_start if steps_ok(s)), reverse=True)]
        results["floor_sweep"] = [{"floor": f, "grid": cfg.grid, "space": cfg.strength_space,
                                   **_fresh(judge, few, model, sampler, cfg, strength=(f, cfg.grid))}
                                  for f in sorted(set(float(f) for f in cfg.sweep_floor))]
    return results


def _fresh(judge: _Judge, anchor_idx: np.ndarray, model, sampler, cfg: PositivesEvalConfig, with_nn: bool = False,
           strength: tuple[float, list] | None = None) -> dict:
    """Every measure for K fresh candidates of each anchor, sampled with `sampler` (one seed for every setting,
    so that settings differ only by themselves); with `strength` = (floor, grid), each candidate's start picked by
    the label-free rule (its chosen starts and similarities summarised beside the measures)."""
    from clsp.diffusion.sampler import generate_positives
    from clsp.positives.strength import StrengthConfig, generate_with_strength, summarise

    unet, scheduler_config = model
    device = "cuda" if torch.cuda.is_available() else "cpu"
    anchors = torch.from_numpy(judge.train.images_at(anchor_idx))
    labels = torch.from_numpy(judge.train.labels[anchor_idx])            # a class-conditional model samples them
    if strength is None:
        candidates = generate_positives(unet, scheduler_config, anchors, cfg.sweep_k, sampler, seed=cfg.seed, device=device,
                                        anchor_labels=labels)
        return judge.judge(anchor_idx, candidates.numpy(), cfg.seed, with_nn=with_nn)
    rule = StrengthConfig(grid=list(strength[1]), floor=strength[0], space=cfg.strength_space)
    candidates, start, similarity = generate_with_strength(unet, scheduler_config, anchors, cfg.sweep_k, sampler, rule,
                                                           seed=cfg.seed, device=device, anchor_labels=labels)
    return {**judge.judge(anchor_idx, candidates.numpy(), cfg.seed, with_nn=with_nn),
            "strength": summarise(start.numpy(), similarity.numpy())}


def _store_strength(store, anchor_idx: np.ndarray) -> dict | None:
    """The store's recorded per-candidate starts and label-free similarities of the judged anchors, summarised."""
    from clsp.positives.strength import summarise

    recorded = store.strength(anchor_idx) if getattr(store, "has_strength", False) else None
    if recorded is None:
        return None
    return {**summarise(recorded["start"], recorded["similarity"]), "space": store.manifest["generation"]["strength"]["space"]}


# -- outputs ---------------------------------------------------------------------------------------

def positives_table(results: dict) -> str:
    from clsp.eval.metrics import format_table

    s, real = results["store"], results["real"]
    rows = [
        ["class agreement (%)", s["agreement"], results["ceiling"], results["chance"]],
        ["Frechet distance (reference space)", s["frechet"], real["frechet_test_vs_train"], None],
        ["pixels at 0 (%)", s["pixels"]["at_0"], real["pixels"]["at_0"], None],
        ["pixels at 255 (%)", s["pixels"]["at_255"], real["pixels"]["at_255"], None],
        [f"pixels within {NEAR} of 0 (%)", s["pixels"].get("near_0"), real["pixels"].get("near_0"), None],
        ["flat images (%)", s["pixels"]["constant"], real["pixels"]["constant"], None],
        ["diversity: cosine distance within K / 2 augmentations", s["diversity"], s["augmentation_distance"], None],
        ["cosine to anchor: candidate / nearest real / random real", s["similarity"]["synthetic"],
         s["similarity"]["nearest_real"], s["similarity"]["random_real"]],
    ]
    marks = s.get("marks")
    if marks:
        rows.append(["agreement (%): two augmentations / nearest real", None, marks["two_augmentations"]["agreement"],
                     marks["nearest_real"]["agreement"]])
        rows.append(["cosine to anchor: two augmentations (of each other)", None, marks["two_augmentations"]["similarity"], None])
    if s.get("strength"):
        st = s["strength"]
        rows.append([f"stored start s (mean) / label-free cosine ({st['space']})", st["start_mean"], st["similarity"]["mean"], None])
    start = s["sampler"].get("start", 1.0)
    title = (f"positives (w = {s['w']}{'' if start == 1.0 else f', start = {start}'}): {s['n_anchors']} anchors x K = {s['k']}, "
             f"judged by a reference classifier with {results['reference']['test_accuracy']:.1f}% test accuracy")
    table = format_table(["measure", "candidates", "real images", "chance / random"], rows, title)
    for key, labels in SWEEP_COLUMNS.items():
        rows = results.get(key) or []
        if rows:
            table += "\n\n" + format_table(
                [*labels, "agreement (%)", "cos to anchor", "diversity", "pixels at 0 (%)", f"within {NEAR} of 0 (%)"],
                [[*(_column(r, label) for label in labels), r["agreement"], r["similarity"]["synthetic"], r["diversity"],
                  r["pixels"]["at_0"], r["pixels"].get("near_0")] for r in rows],
                f"{SWEEP_TITLES[key]}: {rows[0]['n_anchors']} anchors x K = {rows[0]['k']} each")
    return table


# the sweeps of a positives evaluation: their identifying columns and their titles
SWEEP_COLUMNS = {"sweep": ("w",), "layers_sweep": ("layers",), "start_sweep": ("w", "start"), "floor_sweep": ("floor", "mean s")}
SWEEP_TITLES = {"sweep": "w sweep", "layers_sweep": "layers sweep", "start_sweep": "start sweep (partial-noise start s)",
                "floor_sweep": "floor sweep (per-candidate start, label-free)"}


def _column(row: dict, label: str):
    return row["strength"]["start_mean"] if label == "mean s" else row[label]


def plot_sweep(results: dict, path: Path, title: str = "") -> Path | None:
    """Agreement vs w (with chance and the judge's ceiling) beside hardness and diversity vs w."""
    if not results["sweep"]:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from clsp.grids import save_figure

    ws = [r["w"] for r in results["sweep"]]
    fig = Figure(figsize=(9, 3.6), dpi=150)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(ws, [r["agreement"] for r in results["sweep"]], "o-", label="candidates")
    left.axhline(results["ceiling"], color="green", ls="--", lw=1, label=f"real test images ({results['ceiling']:.1f})")
    left.axhline(results["chance"], color="grey", ls=":", lw=1, label=f"chance ({results['chance']:.1f})")
    left.set_xlabel("interpolation weight w (1 = plain sample)")
    left.set_ylabel("class agreement with the anchor (%)")
    left.set_ylim(0, 100)
    left.legend(fontsize=7, frameon=False)
    right.plot(ws, [r["similarity"]["synthetic"] for r in results["sweep"]], "o-", label="cosine to anchor (hardness)")
    right.plot(ws, [r["diversity"] for r in results["sweep"]], "s-", label="distance within K (diversity)")
    s = results["store"]["similarity"]
    right.axhline(s["nearest_real"], color="C2", ls="--", lw=1, label=f"nearest real neighbour ({s['nearest_real']:.2f})")
    right.axhline(s["random_real"], color="grey", ls=":", lw=1, label=f"random real image ({s['random_real']:.2f})")
    right.set_xlabel("interpolation weight w")
    right.set_ylabel("reference feature space")
    lowest = min([s["random_real"]] + [r["diversity"] for r in results["sweep"]])
    right.set_ylim(min(0.0, lowest - 0.05), 1.05)          # room below the curves for the legend
    right.legend(fontsize=7, frameon=False, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def tradeoff_curves(results: dict) -> list[tuple[str, list[tuple[float, float, str]]]]:
    """(generator, [(hardness, agreement, the setting's label)]) for each generator the evaluation sampled."""
    curves = []

    def points(rows, label):
        return [(r["similarity"]["synthetic"], r["agreement"], label(r)) for r in rows]

    if results.get("sweep"):
        curves.append(("interpolation, w (start 1)", points(results["sweep"], lambda r: f"w={r['w']:g}")))
    if results.get("layers_sweep"):
        w = results["store"]["w"]
        curves.append((f"interpolation depth (w = {w:g})", points(results["layers_sweep"], lambda r: f"L{r['layers']}")))
    for w in sorted({r["w"] for r in results.get("start_sweep") or []}, reverse=True):
        name = "SDEdit from the anchor (w = 1), start s" if w == 1.0 else f"interpolation w = {w:g}, start s"
        curves.append((name, points([r for r in results["start_sweep"] if r["w"] == w], lambda r: f"s={r['start']:g}")))
    if results.get("floor_sweep"):
        first = results["floor_sweep"][0]
        curves.append((f"per-candidate s ({first['space']} floor)", points(results["floor_sweep"], lambda r: f"f={r['floor']:g}")))
    return curves


def plot_tradeoff(results: dict, path: Path, title: str = "") -> Path | None:
    """Agreement (class kept, by the judge) against hardness (cosine to the anchor in the judge's space), one curve per
    generator, with two augmentations of the anchor and its nearest real image marked: lower right is the goal."""
    curves = tradeoff_curves(results)
    if not curves:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from clsp.grids import save_figure

    fig = Figure(figsize=(7.5, 5.2), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (name, pts) in enumerate(curves):
        x, y, labels = zip(*pts)
        ax.plot(x, y, "o-", ms=4, lw=1.2, color=f"C{i}", label=name)
        for xi, yi, text in pts:
            ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=6, color=f"C{i}")
    store, marks = results["store"], results["store"].get("marks") or {}
    ax.plot(store["similarity"]["synthetic"], store["agreement"], "s", color="black", ms=7, mfc="none",
            label=f"the store's candidates ({store['n_anchors']} anchors)")
    if marks:
        aug, near = marks["two_augmentations"], marks["nearest_real"]
        ax.plot(aug["similarity"], aug["agreement"], "*", color="C3", ms=12, label="two augmentations of the anchor")
        ax.axvline(aug["similarity"], color="C3", ls=":", lw=0.8)
        ax.plot(near["similarity"], near["agreement"], "D", color="C8", ms=7, label="the anchor's nearest real image")
    ax.axhline(results["ceiling"], color="green", ls="--", lw=1, label=f"judge's ceiling ({results['ceiling']:.1f}%)")
    ax.axhline(results["chance"], color="grey", ls=":", lw=1, label=f"chance ({results['chance']:.1f}%)")
    ax.set_xlabel("hardness: cosine to the anchor in the judge's space (left = harder)")
    ax.set_ylabel("class kept: agreement with the anchor's label (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=6.5, frameon=False, loc="lower right")
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def positives_eval(store_path, dataset_cfg, out_dir, cfg: PositivesEvalConfig | None = None, model_dir=None,
                   progress: bool = True) -> dict:
    """Judge the store made for `dataset_cfg`'s train split; writes metrics.json (+ positives.png with a sweep)."""
    from clsp.config import to_dict
    from clsp.data.config import load_split
    from clsp.eval.metrics import dataset_record, require_labels, run_evaluation
    from clsp.io import hash_directory, hash_json
    from clsp.positives.store import PositivesStore, identity

    from clsp.diffusion.model import resolve_model_dir

    cfg = cfg or PositivesEvalConfig()
    out = Path(out_dir)
    model_dir = resolve_model_dir(model_dir) if model_dir is not None else None
    train = load_split(dataset_cfg, dataset_cfg.train_split)
    test = load_split(dataset_cfg, dataset_cfg.test_split)
    require_labels(train, test)
    store = PositivesStore.open(store_path, train)
    # The judge learns from the whole labelled split, not only the subset a small run trains on.
    full = dataclasses.replace(dataset_cfg, subset=0)
    judge_train, judge_test = (load_split(full, full.train_split), load_split(full, full.test_split)) \
        if dataset_cfg.subset else (train, test)
    sweep = cfg.sweeps and model_dir is not None
    config = {"kind": "positives", "dataset": to_dict(dataset_cfg), "positives": str(store_path), **to_dict(cfg),
              "model": str(model_dir) if sweep else None}
    inputs = {"train": train.fingerprint, "test": test.fingerprint, "judge": judge_train.fingerprint,
              "positives": hash_json(identity(store.manifest)),
              "model": hash_directory(model_dir) if sweep else "none"}
    files = ([FIGURE] if sweep and cfg.sweep_w else []) + ([TRADEOFF_FIGURE] if sweep else [])

    def compute() -> dict:
        model, sampler = None, None
        if sweep:
            from clsp.diffusion.model import load_model
            from clsp.diffusion.sampler import SamplerConfig

            model = load_model(model_dir)
            sampler = SamplerConfig(**store.manifest["generation"]["sampler"])
        from clsp.eval.reference import reference_classifier

        reference = reference_classifier(judge_train, judge_test, cfg.reference)
        results = evaluate_positives(store, train, judge_test, cfg, model, sampler, reference=reference, progress=progress)
        if FIGURE in files:
            title = (f"{train.name}: fresh candidates at each w ({results['sweep'][0]['n_anchors']} anchors x "
                     f"K = {cfg.sweep_k}, {sampler.sampler} {sampler.steps} steps, layers = {sampler.layers})")
            plot_sweep(results, out / FIGURE, title)
            results["figure"] = FIGURE
        if TRADEOFF_FIGURE in files:
            title = (f"{train.name}: class kept against hardness, fresh candidates ({min(cfg.sweep_n, cfg.n)} anchors x "
                     f"K = {cfg.sweep_k}, {sampler.sampler} {sampler.steps} steps, layers = {sampler.layers})")
            plot_tradeoff(results, out / TRADEOFF_FIGURE, title)
            results["tradeoff_figure"] = TRADEOFF_FIGURE
        return results

    return run_evaluation(out, "positives", config, inputs, compute, positives_table, None, dataset_record(train),
                          files=files, positives=str(store_path))
