"""`clsp eval knn|linear|transfer|embed|hardness|positives` and `clsp fid`: parse flags, call the library function.

Heavy imports (torch, the eval modules) happen inside the handlers so that `clsp --help` is instant.
"""

from __future__ import annotations

import argparse

TRANSFER_DEFAULT = "cifar10,cifar100,pets,flowers102,dtd,caltech101,food101,aircraft"


def _encoder_and_data(p: argparse.ArgumentParser, dataset_required: bool = True) -> None:
    p.add_argument("--ckpt", required=True, help="encoder.safetensors written by `clsp pretrain`, or its run directory")
    if dataset_required:
        p.add_argument("--dataset", required=True, help="registry name (fashion-mnist, digits, cifar10, ...) or folder:PATH")
        p.add_argument("--size", type=int, default=None, help="image side to load at (default: the encoder's input size)")
        p.add_argument("--subset", type=int, default=0, help="> 0: a fixed random subset of this many images per split")
    p.add_argument("--root", default=None, help="where the dataset files are (default: the registry's search path)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the GPU when there is one)")


def _out(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("--out", default=None, help=f"output directory (default: beside the encoder, under eval/{kind}/)")


def _probe_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--milestones", default="60,80", help="epochs at which the lr is multiplied by 0.1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--on-the-fly", action="store_true",
                   help="recompute features from flipped images every step (the slow reference; same result)")


def register(subparsers) -> None:
    ev = subparsers.add_parser("eval", help="evaluate an encoder (knn, linear, transfer, embed, hardness) or a positives store",
                               description="Evaluate a pretrained encoder; every command writes metrics.json and prints a table.")
    sub = ev.add_subparsers(dest="eval_command", metavar="KIND", required=True)

    p = sub.add_parser("knn", help="weighted kNN (cosine, T=0.07) for k in 5..200: best k and k=200")
    _encoder_and_data(p)
    _out(p, "knn")
    p.add_argument("--temperature", type=float, default=0.07)
    p.set_defaults(func=run_knn)

    p = sub.add_parser("linear", help="linear probe: SGD lr 1.0, 100 epochs, flip only; top-1 / top-5")
    _encoder_and_data(p)
    _out(p, "linear")
    _probe_flags(p)
    p.set_defaults(func=run_linear)

    p = sub.add_parser("transfer", help="linear probe on downstream sets at the encoder's resolution")
    _encoder_and_data(p, dataset_required=False)
    p.add_argument("--datasets", default=TRANSFER_DEFAULT, help=f"comma-separated (default: {TRANSFER_DEFAULT})")
    p.add_argument("--skip-missing", action="store_true", help="report a set that is not on disk as missing and go on")
    _out(p, "transfer")
    _probe_flags(p)
    p.set_defaults(func=run_transfer)

    p = sub.add_parser("embed", help="t-SNE of test features, coloured by class")
    _encoder_and_data(p)
    p.add_argument("--out", default=None,
                   help="the figure's path (e.g. tsne.png), or a directory for it and metrics.json "
                        "(default: eval/embed/ beside the encoder, which also holds metrics.json)")
    p.add_argument("--n", type=int, default=2000, help="test images to embed (a fixed random subset)")
    p.add_argument("--perplexity", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_embed)

    p = sub.add_parser("hardness", help="cosine similarity of anchors to augmented, NN, synthetic and random positives")
    _encoder_and_data(p)
    p.add_argument("--positives", required=True, help="the positives store directory written by `clsp synthesize`")
    p.add_argument("--n", type=int, default=1000, help="anchors (a fixed random subset of the training set)")
    p.add_argument("--augment", default=None, choices=["simclr", "moco"],
                   help="recipe of 'another augmentation of itself' (default: the encoder meta's, else moco for MoCo, simclr otherwise)")
    p.add_argument("--seed", type=int, default=0)
    _out(p, "hardness")
    p.set_defaults(func=run_hardness)

    p = sub.add_parser("positives", help="how good are the synthetic positives: class agreement, Frechet distance, "
                                         "pixels, diversity, hardness (reference classifier), and a w sweep")
    p.add_argument("--positives", required=True, help="the positives store directory written by `clsp synthesize`")
    p.add_argument("--dataset", required=True, help="the labelled dataset the store was made from (its train split)")
    p.add_argument("--size", type=int, default=None, help="image side the store was made at (e.g. 16)")
    p.add_argument("--subset", type=int, default=0, help="> 0: the subset the store was made from")
    p.add_argument("--root", default=None, help="where the dataset files are")
    p.add_argument("--model", default=None, help="the diffusion model that made the store: needed for --sweep-w")
    p.add_argument("--sweep-w", default="", help="w values to sample afresh and judge, e.g. 0,0.1,0.3,0.5,1")
    p.add_argument("--n", type=int, default=1000, help="anchors whose stored candidates are judged")
    p.add_argument("--sweep-n", type=int, default=100, help="anchors per w in the sweep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory (metrics.json, positives.png)")
    p.set_defaults(func=run_positives)

    p = subparsers.add_parser("fid", help="FID of plain diffusion samples against the training set (torch-fidelity)")
    p.add_argument("--model", required=True, help="diffusion model directory (diffusers layout) from `clsp diffusion train`")
    p.add_argument("--dataset", required=True)
    p.add_argument("--root", default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--n", type=int, default=50000, help="samples to generate")
    p.add_argument("--inception-weights", default=None,
                   help="pt_inception-2015-12-05-6726825d.pth (torch-fidelity's port of the TF FID Inception)")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--eta", type=float, default=None, help="DDIM eta (default: the sampler's)")
    p.add_argument("--batch-size", type=int, default=500, help="samples per chunk (a resumable unit) and per UNet call")
    p.add_argument("--dims", type=int, default=2048, help="Inception layer: 2048 (pool3, the standard FID), 768, 192, 64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="output directory (default: beside the model, under eval/fid/)")
    p.set_defaults(func=run_fid)


def _dataset(args):
    from clsp.data.config import DatasetConfig

    return DatasetConfig(name=args.dataset, root=args.root, size=args.size, subset=args.subset)


def _probe(args):
    from clsp.errors import UserError
    from clsp.eval.linear import LinearProbeConfig

    try:
        milestones = [int(m) for m in args.milestones.split(",") if m.strip()]
    except ValueError:
        raise UserError(f"--milestones must be comma-separated epochs like 60,80, got {args.milestones!r}") from None
    return LinearProbeConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, milestones=milestones,
                             seed=args.seed, on_the_fly=args.on_the_fly)


def run_knn(args) -> int:
    from clsp.eval.knn import knn_eval

    knn_eval(args.ckpt, _dataset(args), args.out, temperature=args.temperature, device=args.device)
    return 0


def run_linear(args) -> int:
    from clsp.eval.linear import linear_eval

    linear_eval(args.ckpt, _dataset(args), args.out, _probe(args), device=args.device)
    return 0


def run_transfer(args) -> int:
    from clsp.eval.transfer import transfer_eval

    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    transfer_eval(args.ckpt, names, args.out, root=args.root, probe_cfg=_probe(args), skip_missing=args.skip_missing,
                  device=args.device)
    return 0


def run_embed(args) -> int:
    from pathlib import Path

    from clsp.eval.embed import embed_plot

    out_dir, figure = None, None
    if args.out is not None:
        out = Path(args.out)
        out_dir, figure = (None, out) if out.suffix.lower() in (".png", ".pdf", ".svg", ".jpg") else (out, None)
    embed_plot(args.ckpt, _dataset(args), out_dir, n=args.n, figure=figure, perplexity=args.perplexity,
               seed=args.seed, device=args.device)
    return 0


def run_hardness(args) -> int:
    from clsp.eval.hardness import hardness_eval

    hardness_eval(args.ckpt, _dataset(args), args.positives, args.out, n=args.n, augment=args.augment, seed=args.seed,
                  device=args.device)
    return 0


def run_positives(args) -> int:
    from clsp.errors import UserError
    from clsp.eval.positives import PositivesEvalConfig, positives_eval

    try:
        sweep = [float(w) for w in args.sweep_w.split(",") if w.strip()]
    except ValueError:
        raise UserError(f"--sweep-w must be comma-separated numbers like 0,0.1,1, got {args.sweep_w!r}") from None
    if sweep and args.model is None:
        raise UserError("--sweep-w samples fresh candidates: give the diffusion model with --model DIR")
    cfg = PositivesEvalConfig(n=args.n, sweep_w=sweep, sweep_n=args.sweep_n, seed=args.seed)
    positives_eval(args.positives, _dataset(args), args.out, cfg, model_dir=args.model)
    return 0


def run_fid(args) -> int:
    from clsp.data.config import DatasetConfig
    from clsp.eval.fid import fid_eval

    data = DatasetConfig(name=args.dataset, root=args.root, size=args.size)
    fid_eval(args.model, data, args.out, n=args.n, inception_weights=args.inception_weights, sampler=args.sampler,
             steps=args.steps, eta=args.eta, batch_size=args.batch_size, seed=args.seed, device=args.device, dims=args.dims)
    return 0
