"""Stage 3: self-supervised pretraining, with or without the CLSP term. `pretrain(cfg) -> out_dir`.

Everything a user can get wrong is checked before any training: unknown keys and ranges (the config),
queue or support-set sizes the global batch does not divide, a CLSP weight without a store, a store
made for other images. A finished run with the same config and inputs is skipped; an interrupted one
resumes exactly from out_dir/checkpoints/last.ckpt. Outputs: encoder.safetensors (the backbone and
what evaluation needs to use it), metrics.json, logs/metrics.csv, tb/, checkpoints/.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path

from clsp.config import check
from clsp.errors import UserError
from clsp.methods import method_class
from clsp.methods.config import PretrainConfig

log = logging.getLogger("clsp.pretrain")


def require_labels_for(method: str, train) -> None:
    """A method that learns from labels (its class sets `needs_labels`) cannot start on a training split without them."""
    if method_class(method).needs_labels and train.labels is None:
        raise UserError(f"method {method} learns from the class labels, but {train.name} split '{train.split}' has none; "
                        "use a labelled split (for a folder: one subfolder per class) or a self-supervised method")


def validate(cfg: PretrainConfig, world: int) -> None:
    """The checks that need the number of processes: queue and support-set sizes vs the global batch,
    and a CLSP weight that needs a store; and the packages of the loggers asked for (before any work)."""
    from clsp.loggers import require_packages

    require_packages(cfg.trainer)
    global_batch = cfg.batch_size * world
    key = method_class(cfg.method).memory_size_key
    if key is not None:
        size = functools.reduce(getattr, key.split("."), cfg)
        check(size > 0 and size % global_batch == 0, key,
              f"{size} is not a multiple of the global batch {global_batch} (batch_size {cfg.batch_size} x {world} "
              f"processes); choose e.g. {max(1, size // global_batch) * global_batch}")
    if cfg.third_view == "synthetic" and not cfg.clsp.positives:
        raise UserError("clsp.weight > 0 needs a positives store: set clsp.positives=DIR (made by `clsp synthesize`), "
                        "or clsp.third_view=augment for the +aug control, or clsp.weight=0 for the plain method")
    if cfg.third_view is not None and cfg.clsp.quality == "store":
        raise UserError("clsp.quality=store needs a per-candidate score in the positives store, and no store carries "
                        "one yet; use clsp.quality=online (scored by the method's own encoder) or none")


def fit_batch_to_data(cfg: PretrainConfig, n_train: int, world: int, prefix: str = "") -> tuple[PretrainConfig, str | None]:
    """cfg with its batch fitted to a training split smaller than one global batch, and a line saying so; cfg
    itself (and None) when the batch fits. Without `batch_follows_data` a batch that does not fit is refused,
    naming the keys with `prefix` (the pipeline's "pretrain.").

    The fitted batch b is the largest b <= n_train / world whose global batch divides the method's queue (MoCo,
    NNCLR, All4One), so that every batch is full and the queue holds whole batches; the learning rate and the
    warmup's start follow the linear scaling rule (Goyal et al. 2017): lr * b / batch_size."""
    global_batch = cfg.batch_size * world
    if n_train >= global_batch:
        return cfg, None
    devices = f" x {world} devices" if world > 1 else ""
    key = method_class(cfg.method).memory_size_key
    queue = functools.reduce(getattr, key.split("."), cfg) if key else None
    fits = [b for b in range(n_train // world, 0, -1) if queue is None or queue % (b * world) == 0]
    if not cfg.batch_follows_data or not fits:
        largest = f"at most {fits[0]}" if fits else "one that fits"
        raise UserError(f"{cfg.dataset.name} split '{cfg.dataset.train_split}' has {n_train} training images, fewer "
                        f"than one batch (batch_size={cfg.batch_size}{devices}); set {prefix}batch_size to {largest}"
                        + (f" (a divisor of {prefix}{key}={queue})" if queue else "")
                        + ("" if cfg.batch_follows_data else f", or {prefix}batch_follows_data=true to fit it to the data"))
    batch = fits[0]
    scale = batch / cfg.batch_size
    fitted = dataclasses.replace(cfg, batch_size=batch, lr=cfg.lr * scale, warmup_start_lr=cfg.warmup_start_lr * scale)
    return fitted, (f"{n_train} training images are fewer than one batch of {cfg.batch_size}{devices}: batch_size "
                    f"{batch}" + (f" (a divisor of {key}={queue})" if queue else "")
                    + f" and lr {fitted.lr:g} ({cfg.lr:g} x {batch}/{cfg.batch_size}), as batch_follows_data=true asks")


def check_third_view_inputs(cfg: PretrainConfig, train, store, resident: bool) -> None:
    """What the third view needs from the data: K >= P stored candidates, labels and a resident set for the oracle."""
    clsp = cfg.clsp
    if store is not None and clsp.positives_per_step > store.k:
        raise UserError(f"clsp.positives_per_step={clsp.positives_per_step} asks for more candidates per step than the "
                        f"store {clsp.positives} holds per image (K = {store.k}); use at most {store.k}, or synthesize more")
    if cfg.third_view == "oracle":
        if train.labels is None:
            raise UserError(f"clsp.third_view=oracle draws another image of the anchor's class, but {train.name} split "
                            f"'{train.split}' has no labels; use a labelled split, or third_view synthetic or augment")
        if not resident:
            raise UserError(f"clsp.third_view=oracle needs the training set held in memory, and {train.name} at this size "
                            "streams from disk; use a smaller dataset.size or subset, or third_view synthetic or augment")


def run_inputs(train, store, crop_source=None) -> dict[str, str]:
    from clsp.io import hash_json

    inputs = {"dataset": train.fingerprint}
    if crop_source is not None and crop_source is not train:
        inputs["crop_source"] = crop_source.fingerprint
    if store is not None:
        from clsp.positives.store import identity

        inputs["positives"] = hash_json(identity(store.manifest))
    return inputs


def pretrain(cfg: PretrainConfig, callbacks: list | None = None) -> Path:
    """Train cfg.method on cfg.dataset (with the CLSP term when cfg.clsp.weight > 0); return out_dir.

    `callbacks`: extra Lightning callbacks (e.g. to stop early). One process at a time per out_dir."""
    from clsp.lock import run_lock

    with run_lock(cfg.out_dir):
        return _pretrain(cfg, callbacks)


def _pretrain(cfg: PretrainConfig, callbacks: list | None) -> Path:
    import torch

    from clsp import rundir, training
    from clsp.data.augment import make_view_augments
    from clsp.data.config import load_split
    from clsp.methods.base import MonitorData
    from clsp.methods.data import ClassMates, StreamingBatches, ViewMaker

    world = training.world_size(cfg.trainer)
    validate(cfg, world)
    training.apply_threads(cfg.trainer)
    out = Path(cfg.out_dir)
    train = load_split(cfg.dataset, cfg.dataset.train_split)
    require_labels_for(cfg.method, train)
    check_backbone(cfg, train.image_size)
    cfg, fitted = fit_batch_to_data(cfg, len(train), world)
    if fitted:
        log.info(f"pretrain: {fitted}")
    global_batch = cfg.batch_size * world
    store = None
    if cfg.third_view == "synthetic":
        from clsp.positives.store import PositivesStore

        store = PositivesStore.open(cfg.clsp.positives, train)
    source = train if cfg.crop_source_size in (None, train.image_size) else \
        load_split(dataclasses.replace(cfg.dataset, size=cfg.crop_source_size), cfg.dataset.train_split)
    check_third_view_inputs(cfg, train, store, source.resident)
    stage = rundir.Stage(out, cfg, run_inputs(train, store, source))
    if stage.complete:
        log.info(f"pretrain: {out} already holds this run (done.json matches); skipping")
        return out
    resume = training.last_checkpoint(out)
    if resume is not None:
        check_resumable(stage)
    test = load_split(cfg.dataset, cfg.dataset.test_split) if train.labels is not None else None
    stage.start()

    torch.manual_seed(cfg.seed)  # initial weights and queues
    resident = source.resident
    if resident:
        images, labels = source.tensors("cpu")
        data = training.ResidentBatches(images, labels, cfg.batch_size, cfg.seed)
    else:
        data = StreamingBatches(source, cfg.batch_size, cfg.seed, cfg.workers)
    size = train.image_size                # the views' side, whatever side they are cropped from
    first, second = make_view_augments(cfg.augment, size, train.mean, train.std, cfg.crop_min_scale)
    class_mates = ClassMates(data) if cfg.third_view == "oracle" else None
    views = ViewMaker(first, cfg.third_view, store, cfg.seed, positives_on_device=resident, second_augment=second,
                      class_mates=class_mates, per_step=cfg.clsp.positives_per_step)
    monitor, num_classes = None, 0
    if test is not None:
        num_classes = len(train.classes)
        as_tensor = lambda ds: ds.tensors("cpu")[0] if ds.resident else ds  # noqa: E731
        monitor = MonitorData(as_tensor(train), torch.from_numpy(train.labels), as_tensor(test),
                              torch.from_numpy(test.labels), tuple(train.mean), tuple(train.std), size)
    steps_per_epoch = data.steps_per_epoch(world)
    module = method_class(cfg.method)(cfg, data, views, steps_per_epoch, num_classes, monitor, image_size=size)
    module = module.to(memory_format=torch.channels_last)  # as the augmented views are (and DDP's buckets)
    check_batch_fits(cfg, module, size, views.n_views)

    trainer = training.make_trainer(cfg.trainer, out, max_steps=steps_per_epoch * cfg.epochs, max_epochs=cfg.epochs,
                                    callbacks=list(callbacks or []), use_distributed_sampler=False)
    if resume is not None:
        log.info(f"pretrain: resuming from {resume}")
    third = {"synthetic": " + CLSP", "augment": " + aug", "oracle": " + oracle"}.get(cfg.third_view or "", "")
    log.info(f"pretrain: {cfg.method}{third}"
             f" on {cfg.dataset.name} ({len(train)} images, {steps_per_epoch} steps/epoch x {cfg.epochs} epochs, "
             f"global batch {global_batch}) -> {out}")
    training.fit(trainer, module, train_dataloaders=data.loader(world, training.checkpoint_step(resume)),
                 ckpt_path=str(resume) if resume else None)
    trainer.save_checkpoint(out / "checkpoints" / "last.ckpt", weights_only=False)  # the final state, queues included
    if not trainer.is_global_zero:
        return out

    wall = module.train_seconds()  # over every session of the run (a resumed run keeps its earlier time)
    metrics = {
        "method": cfg.method, "clsp_weight": cfg.clsp.weight, "third_view": cfg.third_view,
        "probe_test_acc": module.results.get("probe_acc"), "knn_acc": module.results.get("knn_acc"),
        "knn_k": cfg.knn.k, "steps": trainer.global_step, "epochs": trainer.current_epoch,
        "wall_seconds": wall, "images_per_second": trainer.global_step * global_batch / wall if wall > 0 else None,
        "views_per_image": views.n_views, "global_batch": global_batch,
        **collapse_check(out / "logs" / "metrics.csv", module.collapsed_ssl_loss(global_batch)),
        "clsp_ramp_epochs": cfg.clsp.ramp_epochs, "positives_per_step": cfg.clsp.positives_per_step,
        "clsp_form": cfg.clsp.form if cfg.third_view else None,
        "quality": quality_summary(out / "logs" / "metrics.csv") if cfg.third_view and cfg.clsp.quality != "none" else None,
    }
    from clsp.io import write_json_atomic
    from clsp.models.encoder import ENCODER_FILE, save_encoder

    save_encoder(out / ENCODER_FILE, module.backbone, encoder_meta(cfg, train, module.feat_dim))
    write_json_atomic(out / "metrics.json", metrics)
    stage.done({"encoder": ENCODER_FILE, "metrics": metrics})
    scores = ", ".join(f"{name} {value:.2f}%" for name, value in (("online probe", metrics["probe_test_acc"]),
                                                                  ("online kNN", metrics["knn_acc"])) if value is not None)
    log.info(f"pretrain: done in {wall:.0f} s{'; ' + scores if scores else ''} -> {out / ENCODER_FILE}")
    return out


def check_backbone(cfg: PretrainConfig, image_size: int) -> None:
    """Refuse, before anything is written, a backbone that cannot be built for these images (an unknown or
    uninstalled timm model, a stem it has not, a ViT patch the side does not divide), by building it once
    (the weights are drawn again, after seeding, for the run)."""
    from clsp.models.backbones import make_backbone

    make_backbone(cfg.backbone.arch, cfg.backbone.stem, cfg.backbone.width, image_size)


def check_batch_fits(cfg: PretrainConfig, module, size: int, n_views: int) -> None:
    """Refuse, before the first step, a batch whose views' activations cannot fit in memory (clsp.memory)."""
    import torch

    from clsp import training
    from clsp.memory import activation_bytes_per_image, check_step_fits

    channels = next((m.in_channels for m in module.backbone.modules() if isinstance(m, torch.nn.Conv2d)), 3)
    example = torch.zeros(2, channels, size, size)
    per_image = activation_bytes_per_image([module.backbone, module.projector],
                                           lambda x: module.projector(module.backbone(x)), example)
    check_step_fits(per_image, cfg.batch_size * n_views, "cuda" if training.uses_gpu(cfg.trainer) else "cpu",
                    "batch_size", cfg.batch_size, training.precision(cfg.trainer))


def collapse_check(csv_path: Path, collapsed_loss: float | None) -> dict:
    """The SSL loss over the last tenth of the run against the loss of identical projections: within 2% of it,
    the projections have collapsed (the run learnt nothing contrastive, whatever the backbone's kNN says)."""
    import csv

    try:
        with open(csv_path, newline="") as f:
            losses = [float(r["train/loss_ssl"]) for r in csv.DictReader(f) if r.get("train/loss_ssl")]
    except (OSError, KeyError, ValueError):
        losses = []
    tail = losses[-max(1, len(losses) // 10):]
    final = sum(tail) / len(tail) if tail else None
    collapsed = None if final is None or collapsed_loss is None else bool(final >= 0.98 * collapsed_loss)
    return {"ssl_loss_final": final, "ssl_loss_collapsed": collapsed_loss, "collapsed": collapsed}


def quality_summary(csv_path: Path) -> dict | None:
    """The quality weights over the run: each logged statistic (train/quality_*) averaged over the logged steps
    (score_mean, weight_min, weight_q10, weight_median, weight_q90, weight_max, weight_zero: the share at 0)."""
    import csv

    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    columns = [c for c in (rows[0] if rows else {}) if c.startswith("train/quality_")]
    summary = {}
    for column in columns:
        values = [float(r[column]) for r in rows if r.get(column)]
        if values:
            summary[column.removeprefix("train/quality_")] = sum(values) / len(values)
    return summary or None


def encoder_meta(cfg: PretrainConfig, train, feat_dim: int) -> dict:
    """What evaluation needs to rebuild and feed an encoder (the header of encoder.safetensors)."""
    from clsp.models.backbones import backbone_record

    return {"arch": cfg.backbone.arch, "stem": cfg.backbone.stem, "width": cfg.backbone.width, "feat_dim": feat_dim,
            **backbone_record(cfg.backbone.arch), "dataset": cfg.dataset.name,
            "image_size": train.image_size, "mean": list(train.mean), "std": list(train.std), "method": cfg.method,
            "clsp_lambda": cfg.clsp.weight, "third_view": cfg.third_view, "epochs": cfg.epochs}


def untrained_encoder(cfg: PretrainConfig) -> Path:
    """The floor every method must clear: the backbone exactly as pretraining with `cfg.seed` initialises it,
    never trained, written as an encoder (method "none", 0 epochs) so that every evaluation reads it as it
    reads a trained one."""
    import torch

    from clsp import rundir
    from clsp.data.config import load_split
    from clsp.io import write_json_atomic
    from clsp.models.backbones import make_backbone
    from clsp.models.encoder import ENCODER_FILE, save_encoder

    out = Path(cfg.out_dir)
    train = load_split(cfg.dataset, cfg.dataset.train_split)
    record = {"untrained": True, "arch": cfg.backbone.arch, "stem": cfg.backbone.stem, "seed": cfg.seed}
    stage = rundir.Stage(out, record, {"dataset": train.fingerprint})
    if stage.complete:
        return out
    stage.start()
    torch.manual_seed(cfg.seed)                      # as pretrain() seeds the model it builds
    backbone, feat_dim = make_backbone(cfg.backbone.arch, cfg.backbone.stem, cfg.backbone.width, train.image_size)
    meta = encoder_meta(cfg, train, feat_dim) | {"method": "none", "clsp_lambda": 0.0, "third_view": None, "epochs": 0}
    save_encoder(out / ENCODER_FILE, backbone, meta)
    metrics = {"method": "none", "untrained": True, "seed": cfg.seed, "steps": 0, "epochs": 0}
    write_json_atomic(out / "metrics.json", metrics)
    stage.done({"encoder": ENCODER_FILE, "metrics": metrics})
    log.info(f"pretrain: the untrained {cfg.backbone.arch} of seed {cfg.seed} (the no-pretraining floor) -> {out}")
    return out


def check_resumable(stage) -> None:
    """An interrupted run (a rundir.Stage) resumes only with the settings it was started with (the trainer
    section, e.g. the number of devices, may change)."""
    import yaml

    from clsp.config import to_dict

    out = stage.out
    try:
        before, inputs_before = stage.recorded_config(), stage.recorded_inputs()
    except (OSError, ValueError, yaml.YAMLError):
        raise UserError(f"{out} holds a checkpoint but no readable run record (config.yaml, inputs.json); "
                        f"use another out_dir or delete {out}") from None
    now = to_dict(stage.config)
    changed = sorted(key for key in set(before) | set(now)
                     if key not in ("trainer", "out_dir") and before.get(key) != now.get(key))
    if changed or inputs_before != stage.inputs:
        what = ", ".join(changed) if changed else "the inputs (dataset or positives store)"
        raise UserError(f"{out} holds an interrupted run made with other settings ({what} differ); resume it with "
                        f"its own config ({out / 'config.yaml'}), or use another out_dir, or delete {out}")


