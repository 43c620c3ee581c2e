"""The first steps of a pretraining run, term by term: why does a CLSP run collapse?

    python scripts/collapse_diagnostics.py --config cpu-study --variant clsp --store DIR --out steps.csv \
        [--steps 50] [--seed 0] [--method simclr] [key=value ...]   (pretrain keys: clsp.weight=1 clsp.ramp_epochs=2)

Builds the pretraining run the pipeline preset makes for (method, variant, seed), then trains it for `--steps`
steps exactly as `clsp pretrain` would (same data order, views, step RNG, optimiser and schedule; a plain
loop instead of Lightning's) and writes one CSV row per step, measured before the optimiser step:
    loss_ssl, loss_clsp, clsp_weight, lr                     the terms, lambda(step), the learning rate
    grad_ssl, grad_clsp, grad_cos                            |d L_ssl / d theta|, |d lambda L_clsp / d theta| and the
                                                             cosine between the two, theta = backbone + projector
    z_cos, h_cos                                             mean pairwise cosine of the projections (all views)
                                                             and of the backbone features: 1 = collapsed
    pos_cos                                                  mean cos(z1, z3): the CLSP pair
--per-view-bn encodes each view on its own (BatchNorm statistics per view) instead of the method's choice.

    python scripts/collapse_diagnostics.py plot OUT.png A.csv B.csv ...     the curves of several runs, one figure
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def mean_pairwise_cosine(x) -> float:
    """Mean cosine over all pairs i != j of the rows of x: (|sum_i u_i|^2 - n) / (n (n - 1)), u = x / |x|."""
    import torch.nn.functional as F

    u = F.normalize(x.detach().float(), dim=1)
    n = len(u)
    return float((u.sum(0).pow(2).sum() - n) / (n * (n - 1)))


def build(args):
    """(config, module, batches, views) as pretraining builds them for this preset, variant and seed."""
    import torch

    from clsp import training
    from clsp.config import load_config
    from clsp.data.augment import make_view_augments
    from clsp.data.config import load_split
    from clsp.layout import RunLayout, RunSpec
    from clsp.methods import method_class
    from clsp.methods.data import ClassMates, ViewMaker
    from clsp.methods.pretrain import PretrainConfig, check_third_view_inputs
    from clsp.pipeline import PipelineConfig, pretrain_config
    from clsp.positives.store import PositivesStore

    pipeline = load_config(PipelineConfig, args.config, [f"out_dir={args.scratch}"])
    base = pretrain_config(pipeline, RunSpec(args.method, args.variant, args.seed), RunLayout(Path(args.scratch)))
    cfg = load_config(PretrainConfig, None, [*args.overrides], extra=_as_dict(base))
    if args.variant == "clsp":
        cfg = dataclasses.replace(cfg, clsp=dataclasses.replace(cfg.clsp, positives=args.store))
    train = load_split(cfg.dataset, cfg.dataset.train_split)
    store = PositivesStore.open(cfg.clsp.positives, train) if cfg.third_view == "synthetic" else None
    check_third_view_inputs(cfg, train, store, train.resident)
    training.apply_threads(cfg.trainer)
    torch.manual_seed(cfg.seed)
    images, labels = train.tensors("cpu")
    batches = training.ResidentBatches(images, labels, cfg.batch_size, cfg.seed)
    first, second = make_view_augments(cfg.augment, train.image_size, train.mean, train.std, cfg.crop_min_scale)
    views = ViewMaker(first, cfg.third_view, store, cfg.seed, second_augment=second, per_step=cfg.clsp.positives_per_step,
                      class_mates=ClassMates(batches) if cfg.third_view == "oracle" else None)
    module = method_class(cfg.method)(cfg, batches, views, batches.steps_per_epoch(1), len(train.classes))
    module = module.to(memory_format=torch.channels_last)
    if args.per_view_bn:
        module.views_in_one_forward = False
    module.log = lambda *a, **k: None          # no Lightning trainer here (momentum methods log their tau)
    return cfg, module, batches, views


def _as_dict(cfg) -> dict:
    from clsp.config import to_dict

    return to_dict(cfg)


def run(args) -> None:
    import torch

    from clsp.methods.base import clsp_weight_at
    from clsp.methods.data import step_rng

    cfg, module, batches, views = build(args)
    device = torch.device("cpu")
    batches.to(device)
    views.to(device)
    optim = module.configure_optimizers()
    optimizer, scheduler = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    params = [p for m in (module.backbone, module.projector) for p in m.parameters() if p.requires_grad]
    captured = {}
    module.backbone.register_forward_hook(lambda m, i, o: captured.setdefault("h", []).append(o))
    module.projector.register_forward_hook(lambda m, i, o: captured.setdefault("z", []).append(o))
    rows = []
    source = batches.from_step(0)
    for step in range(args.steps):
        indices, images, labels = next(source)
        weight = clsp_weight_at(step, cfg.clsp.weight, module.clsp_ramp_steps)
        captured.clear()
        with step_rng(cfg.seed, step, 0, device):
            x = views(images, indices, step, 0)
            module.before_step(step)
            loss, logs, _ = module.loss_from_views(x, labels, torch.full((), weight))
        z, h = torch.cat(captured["z"]), torch.cat(captured["h"])   # every view, in view order
        b = len(images)
        row = {"step": step, "lr": optimizer.param_groups[0]["lr"], "clsp_weight": weight,
               "loss_ssl": float(logs["train/loss_ssl"]), "z_cos": mean_pairwise_cosine(z),
               "h_cos": mean_pairwise_cosine(h)}
        g_ssl = torch.autograd.grad(logs["train/loss_ssl"], params, retain_graph=True, allow_unused=True)
        flat_ssl = torch.cat([g.flatten() for g in g_ssl if g is not None])
        row["grad_ssl"] = float(flat_ssl.norm())
        if "train/loss_clsp" in logs:
            g_clsp = torch.autograd.grad(weight * logs["train/loss_clsp"], params, retain_graph=True, allow_unused=True)
            flat_clsp = torch.cat([torch.zeros_like(p).flatten() if g is None else g.flatten() for g, p in zip(g_clsp, params)])
            flat_ssl_full = torch.cat([torch.zeros_like(p).flatten() if g is None else g.flatten() for g, p in zip(g_ssl, params)])
            row.update(loss_clsp=float(logs["train/loss_clsp"]), grad_clsp=float(flat_clsp.norm()),
                       grad_cos=float(torch.nn.functional.cosine_similarity(flat_ssl_full, flat_clsp, dim=0)),
                       pos_cos=float(torch.nn.functional.cosine_similarity(z[:b], z[2 * b:3 * b], dim=1).mean()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        rows.append(row)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


def plot(png: str, paths: list[str]) -> None:
    """Projection cosine, the two gradient norms and NT-Xent against the step, a line per CSV (named by its stem)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("z_cos", "mean pairwise cos of projections"), ("pos_cos", "cos(z1, z3): the CLSP pair"),
              ("grad_ssl", "|grad L_ssl|"), ("grad_clsp", "|grad lambda L_clsp|"), ("loss_ssl", "NT-Xent")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for path in paths:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        for ax, (key, title) in zip(axes, panels):
            points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
            if points:
                ax.plot(*zip(*points), label=Path(path).stem)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
            if key.startswith("grad"):
                ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    if sys.argv[1:2] == ["plot"]:
        return plot(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu-study", help="a pipeline preset")
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--variant", default="clsp", choices=["base", "clsp", "aug", "oracle"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", default=None, help="the positives store of the clsp variant")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--per-view-bn", action="store_true")
    parser.add_argument("--scratch", default="/tmp/clsp-collapse", help="the pipeline's out_dir (nothing is written)")
    parser.add_argument("--out", required=True, help="the CSV to write")
    parser.add_argument("overrides", nargs="*", help="pretrain keys, e.g. clsp.weight=1 clsp.ramp_epochs=2")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
