"""The Lightning module every method shares: the plumbing is here once, a method adds only its loss.

One training step: gather the batch on the device (step-derived indices), make the views, let the
momentum encoders follow (`before_step`), then `loss_from_views`: encode the views through backbone
and projector (one forward per view, or all views in one forward: see `views_in_one_forward`) and

    loss = L_method(views, z) + lambda(step) * mean_p,i q_pi (2 - 2 cos(z1_i, z3p_i)) + CE(probe(sg(features)), labels)

where z3p is the projection of the p-th third view (P = clsp.positives_per_step of them: synthetic
candidates, further augmentations for the "+aug" control, or class-mates for the oracle) through the same
(query) branch as z1; lambda(step) rises linearly from 0 to clsp.weight over clsp.ramp_epochs (constant
when 0); q are the label-free quality weights of clsp.quality (1 when none; losses.quality_weights); sg
stops gradients: the online linear probe only watches. With clsp.form=contrast the term is instead
losses.clsp_contrast: each z1_i picks out its P positives among the batch's (StableRep's multi-positive loss).
`loss_from_views` has no side effects (queues are written after the optimiser step, by the memory bank), so it
is what `torch.compile` compiles: by default on CUDA, where the host's Python and dispatch would otherwise be
a step's cost once the compute is small (trainer.compile).
Every epoch (or every N) the probe and a kNN classifier are scored on the test split.
A non-finite loss is recorded on the device at no cost and checked every `log_every` steps and before
every checkpoint, so a run stops naming the first bad step and never saves NaN weights.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clsp.errors import UserError
from clsp.methods import memory_bank
from clsp.methods.clsp_term import clsp_weight_at
from clsp.methods.data import ViewMaker, step_rng
from clsp.methods.lars import LARS
from clsp.methods.losses import clsp_loss, quality_weights
from clsp.models.backbones import make_backbone
from clsp.models.heads import make_projector
from clsp.models.view_norm import per_view_batchnorm, views_apart


class NonFiniteLossError(UserError):
    """The loss became NaN or inf: the run stops, its last checkpoint (all finite) stays."""


@dataclass
class MonitorData:
    """What the per-epoch monitors score: train images (kNN bank), the test split, the eval recipe."""

    train: Any                     # uint8 NHWC tensor, or a StreamingImageSet
    train_labels: Tensor
    test: Any
    test_labels: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int

    def to(self, device: torch.device) -> "MonitorData":
        for name in ("train", "train_labels", "test", "test_labels"):
            value = getattr(self, name)
            if isinstance(value, Tensor):
                setattr(self, name, value.to(device))
        return self


def compile_step(trainer_cfg, device: torch.device, world: int) -> bool:
    """Whether the step is compiled: trainer.compile, or by default (null) on one CUDA device. Several
    processes stay eager: the gathers across ranks inside the losses are collectives torch.compile would
    have to trace."""
    wanted = trainer_cfg.compile if trainer_cfg.compile is not None else device.type == "cuda"
    return bool(wanted) and world == 1


def warmup_cosine(warmup_steps: int, total_steps: int, start_factor: float):
    """LR factor per step: linear from start_factor to 1 over the warmup, then cosine down to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return start_factor + (1 - start_factor) * step / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def momentum_at(step: int, total_steps: int, start: float, end: float) -> float:
    """Key-encoder momentum rising from `start` to `end` on a cosine schedule (BYOL, MoCo v3)."""
    return end - (end - start) * (math.cos(math.pi * min(1.0, step / max(1, total_steps))) + 1) / 2


def quality_logs(scores: Tensor, weights: Tensor) -> dict[str, Tensor]:
    """The distribution of a step's quality scores and weights, for the logs (train/quality_*)."""
    q = torch.quantile(weights.flatten(), torch.tensor([0.1, 0.5, 0.9], device=weights.device))
    return {"train/quality_score_mean": scores.mean(), "train/quality_weight_min": weights.min(),
            "train/quality_weight_q10": q[0], "train/quality_weight_median": q[1], "train/quality_weight_q90": q[2],
            "train/quality_weight_max": weights.max(), "train/quality_weight_zero": (weights == 0).float().mean()}


def frozen_copy(module: nn.Module) -> nn.Module:
    """A momentum (key) copy: same weights, no gradients."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def momentum_projections(backbone: nn.Module, projector: nn.Module, views: list[Tensor]) -> list[Tensor]:
    """L2-normalised projections of each view by a momentum (key) encoder: the views in one forward,
    BatchNorm statistics per view (clsp.models.view_norm), as one forward per view would have them."""
    with views_apart(len(views), backbone, projector):
        z = projector(backbone(torch.cat(views)))
    return list(F.normalize(z.float(), dim=1).chunk(len(views)))


@torch.no_grad()
def momentum_update(online: list[nn.Module], target: list[nn.Module], tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, parameter by parameter."""
    online_params = [p for m in online for p in m.parameters()]
    target_params = [p for m in target for p in m.parameters()]
    torch._foreach_lerp_(target_params, online_params, 1.0 - tau)


class ContrastiveMethod(L.LightningModule):
    """Backbone + projector + online probe, the optimiser, the step, the monitors, the NaN guard.

    A method implements `ssl_loss(views, z) -> (loss, logs, entries)`: `views` are the augmented image
    batches, `z` the projector outputs of all views (z[0], z[1] the real views, z[2] the third view when
    there is one); a method that sets `needs_labels` gets the batch's labels as a third argument (and
    pretraining refuses data without labels for it). `logs` are extra scalars to log, `entries` what
    the base writes into the method's `memory_bank` after the optimiser step (None for none). Momentum
    methods derive from `MomentumMethod`, which updates their target encoders before the step's forward.

    `views_in_one_forward` decides what BatchNorm normalises each view with. False (the default): each
    view is normalised with its own batch statistics, as if it went through backbone and projector on
    its own, so the synthetic view never shifts those the real views are normalised with; solo-learn
    runs every view so, and the release's MoCo too. True: every view is normalised with the statistics
    of all of them (the release's SimCLR concatenates the views). Either way the views go through the
    network in one forward: only BatchNorm mixes samples, and it normalises per view where the flag
    is False (clsp.models.view_norm), so the weights' per-call cost is paid once, not once per view.
    """

    views_in_one_forward: bool = False
    needs_labels: bool = False       # True: ssl_loss takes the batch's labels as a third argument (SupCon)
    memory_bank: str | None = None   # the buffer (clsp.methods.memory_bank) that ssl_loss's entries are written into
    memory_size_key: str | None = None   # its size's config key (`validate`: a multiple of the global batch)

    def __init__(self, cfg, data, views: ViewMaker, steps_per_epoch: int, num_classes: int = 0,
                 monitor: MonitorData | None = None, image_size: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        b = cfg.backbone
        self.backbone, self.feat_dim = make_backbone(b.arch, b.stem, b.width, image_size)
        p = cfg.projector
        self.projector = make_projector(self.feat_dim, p.hidden_dim, p.out_dim, p.layers, p.batchnorm,
                                        p.output_batchnorm)
        per_view_batchnorm(self.backbone), per_view_batchnorm(self.projector)   # encode: views in one forward
        self.probe = nn.Linear(self.feat_dim, num_classes) if num_classes else None
        self.data, self.views, self.monitor = data, views, monitor
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * cfg.epochs
        self.clsp_ramp_steps = round(cfg.clsp.ramp_epochs * steps_per_epoch)
        self.results: dict[str, float] = {}
        self._first_bad_step: Tensor | None = None
        self._seconds_before = 0.0                      # training time of earlier sessions
        self._session_start, self._session_last = None, None   # this session's first step start, last step end
        # The probe's train accuracy over the epoch so far (hits, seen): kept in checkpoints, so that an epoch
        # resumed in its middle reports the accuracy of all its steps, as Lightning's epoch mean would not.
        self._probe_counts = torch.zeros(2, dtype=torch.long)
        self.step_loss = self.loss_from_views          # compiled in on_fit_start when trainer.compile says so
        self.compiled_step = False
        self._entries: tuple[int, Tensor] | None = None  # (step, entries) waiting for the optimiser step

    # -- what a method defines ---------------------------------------------------------------------

    def ssl_loss(self, views: list[Tensor], z: list[Tensor]) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        raise NotImplementedError(f"{type(self).__name__} must define ssl_loss")

    def before_step(self, step: int) -> None:
        """Work before the step's forward that must not be compiled (momentum encoders following)."""

    def collapsed_ssl_loss(self, global_batch: int) -> float | None:
        """The SSL loss when every projection points the same way (all logits equal): a run that ends there has
        collapsed, whatever its backbone's kNN says. None where the method has no such closed form."""
        return None

    def lr_overrides(self) -> dict[str, float]:
        """Submodule name -> learning rate, for parts a method trains at their own rate."""
        return {}

    # -- the step ----------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        self.data.to(self.device)
        self.views.to(self.device)
        if self.monitor is not None:
            self.monitor.to(self.device)
        self._first_bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self._probe_counts = self._probe_counts.to(self.device)
        if compile_step(self.cfg.trainer, self.device, self.trainer.world_size) and not self.compiled_step:
            self.step_loss = torch.compile(self.loss_from_views, mode=self.cfg.trainer.compile_mode)
            self.compiled_step = True

    def training_step(self, batch, batch_idx: int) -> Tensor:
        step, rank = self.global_step, self.global_rank
        indices, images, labels = batch          # on the device (ResidentBatches / StreamingBatches)
        clsp_weight = torch.full((), clsp_weight_at(step, self.cfg.clsp.weight, self.clsp_ramp_steps), device=self.device)
        with step_rng(self.cfg.seed, step, rank, self.device):
            views = self.views(images, indices, step, rank)
            self.before_step(step)
            loss, logs, entries = self.step_loss(views, labels, clsp_weight)
        self._entries = None if entries is None else (step, entries)
        self._guard_finite(loss, step)
        probe_counts = logs.pop("train/probe_counts", None)
        if probe_counts is not None:
            self._probe_counts += probe_counts
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=len(images))
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(images))
        return loss

    def loss_from_views(self, views: list[Tensor], labels: Tensor | None, clsp_weight: Tensor | float | None = None,
                        ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        """(loss, scalars to log, queue entries) of one step from its augmented views, without side effects
        (BatchNorm's running statistics aside): the part of the step that `torch.compile` compiles.
        `clsp_weight` is lambda at this step (a 0-d tensor, so that a ramp does not recompile); None: clsp.weight."""
        feats, z = self.encode(views)
        loss_ssl, logs, entries = self.ssl_loss(views, z, labels) if self.needs_labels else self.ssl_loss(views, z)
        loss = loss_ssl
        logs = {"train/loss_ssl": loss_ssl, **logs}
        if len(views) > 2:
            weight = self.cfg.clsp.weight if clsp_weight is None else clsp_weight
            q = None
            if self.cfg.clsp.quality == "online":
                scores = self.quality_scores(views, z)                             # (P, B), no gradient
                q = quality_weights(scores)
                logs.update(quality_logs(scores, q))
            loss_clsp = clsp_loss(z[0], z[2:], q, self.cfg.clsp.form, self.cfg.temperature)
            loss = loss + weight * loss_clsp
            logs["train/loss_clsp"] = loss_clsp
            logs["train/clsp_weight"] = torch.as_tensor(weight)
        if self.probe is not None and labels is not None:
            logits = self.probe(torch.cat(feats[:2]).detach().float())
            targets = labels.repeat(2)
            loss = loss + F.cross_entropy(logits, targets)
            logs["train/probe_counts"] = torch.stack([(logits.argmax(1) == targets).sum(), targets.new_tensor(len(targets))])
        return loss, logs, entries

    def quality_scores(self, views: list[Tensor], z: list[Tensor]) -> Tensor:
        """Label-free score of each positive: cos(z1_i, z3p_i) of the online projections, detached, (P, B).
        Momentum methods score in their target encoder's space instead (MomentumMethod)."""
        with torch.no_grad():
            return torch.stack([F.cosine_similarity(z[0].float(), zp.float(), dim=1) for zp in z[2:]])

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self._entries is not None:     # after backward: the loss no longer needs the bank as it was
            step, entries = self._entries
            memory_bank.enqueue(getattr(self, self.memory_bank), entries, step)
            self._entries = None

    def encode(self, views: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """(backbone features, projections) of each view, from one forward of all views; BatchNorm statistics
        per view or over all views (`views_in_one_forward`, class docstring)."""
        n = len(views)
        with views_apart(1 if self.views_in_one_forward else n, self.backbone, self.projector):
            feats = self.backbone(torch.cat(views))
            z = self.projector(feats)
        return list(feats.chunk(n)), list(z.chunk(n))

    def _guard_finite(self, loss: Tensor, step: int) -> None:
        """Record the first non-finite step on the device; look at it (one host sync) only every
        log_every steps, at epoch ends and before checkpoints, i.e. before anything is saved."""
        bad = ~torch.isfinite(loss.detach())
        self._first_bad_step = torch.where(bad & (self._first_bad_step < 0), step, self._first_bad_step)
        done = step + 1
        trainer_cfg = self.cfg.trainer
        if done % trainer_cfg.log_every and done % trainer_cfg.checkpoint_every and done % self.steps_per_epoch \
                and done != self.total_steps:
            return
        first = int(self.trainer.strategy.reduce(self._first_bad_step.clone(), reduce_op=torch.distributed.ReduceOp.MAX)
                    if self.trainer.world_size > 1 else self._first_bad_step)
        if first >= 0:
            raise NonFiniteLossError(
                f"the loss became NaN or inf at training step {first}; the run stopped and its last checkpoint "
                f"(from before that step) is kept. Lower `lr` or the warmup start, or check the inputs, then rerun "
                f"(it resumes from the checkpoint)")

    # -- what a checkpoint keeps besides the state: the monitors' scores and the training time -----

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self._session_start is None:
            self._session_start = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self._session_last = time.perf_counter()

    def train_seconds(self) -> float:
        """Seconds from each session's first step to its last step or checkpoint, summed over the sessions of
        this run: a session that resumes a finished run (0 steps) adds nothing, and start-up time is no step's.
        The last checkpoint and the final metrics therefore record the same time."""
        now = self._session_last - self._session_start if self._session_start is not None and self._session_last else 0.0
        return self._seconds_before + now

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._session_start is not None:   # Lightning saves from a callback, before this module's batch-end hook
            self._session_last = time.perf_counter()
        checkpoint["clsp"] = {"results": dict(self.results), "train_seconds": self.train_seconds(),
                              "probe_counts": self._probe_counts.cpu()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("clsp") or {}
        self.results.update(saved.get("results") or {})
        self._seconds_before = float(saved.get("train_seconds") or 0.0)
        # A checkpoint at an epoch's last step is written after that epoch's end (clsp.training), which reported and
        # reset the probe's counts: the resumed run starts its next epoch from zero counts.
        if "probe_counts" in saved and int(checkpoint.get("global_step", 0)) % self.steps_per_epoch:
            self._probe_counts = saved["probe_counts"].clone()

    # -- optimiser ---------------------------------------------------------------------------------

    def param_groups(self) -> list[dict]:
        """SSL parameters at `lr` (with LARS: biases and norms in their own group, no weight decay,
        no adaptation), methods' own-rate parts, and the probe at `probe.lr` without weight decay."""
        cfg, lars = self.cfg, self.cfg.optimizer == "lars"
        overrides = self.lr_overrides()
        groups: dict[str, dict] = {}

        def add(name: str, p: nn.Parameter, **options) -> None:
            groups.setdefault(name, dict(name=name, params=[], **options))["params"].append(p)

        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            top = name.split(".")[0]
            if top == "probe":
                add("probe", p, lr=cfg.probe.lr, weight_decay=0.0, lars_exclude=True)
            elif lars and p.ndim <= 1:
                add(f"{top}_no_decay" if top in overrides else "no_decay", p, lr=overrides.get(top, cfg.lr),
                    weight_decay=0.0, lars_exclude=True)
            elif top in overrides:
                add(top, p, lr=overrides[top])
            else:
                add("ssl", p)
        return list(groups.values())

    def configure_optimizers(self):
        cfg = self.cfg
        if cfg.optimizer == "lars":
            optimizer = LARS(self.param_groups(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                             eta=cfg.lars_eta, clip_lr=cfg.lars_clip_lr, exclude_bias_n_norm=True)
        else:
            groups = [{k: v for k, v in g.items() if k != "lars_exclude"} for g in self.param_groups()]
            if cfg.optimizer == "adamw":   # solo-learn's ViT recipes: torch's AdamW, betas (0.9, 0.999), decay on all
                optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
            else:
                # fused: one kernel reads each weight, gradient and momentum once and writes them back (CPU and CUDA);
                # foreach made ~3 weight-sized passes, ~1.3x the optimiser's time at ResNet-18's width (issue 29)
                optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                            fused=True)
        warmup = cfg.warmup_epochs * self.steps_per_epoch
        schedule = warmup_cosine(warmup, self.total_steps, cfg.warmup_start_lr / cfg.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- monitors ----------------------------------------------------------------------------------

    def on_train_epoch_end(self) -> None:
        if self.probe is not None:
            counts = self._probe_counts
            if self.trainer.world_size > 1:
                counts = self.trainer.strategy.reduce(counts.clone(), reduce_op="sum")
            if int(counts[1]) > 0:
                self.log("train/probe_acc", 100.0 * float(counts[0]) / float(counts[1]), on_epoch=True, sync_dist=True)
            self._probe_counts.zero_()
        if self.monitor is None:
            return
        epoch, last = self.current_epoch + 1, self.current_epoch + 1 >= self.cfg.epochs
        probe_due = self.probe is not None and (last or (self.cfg.probe.every and epoch % self.cfg.probe.every == 0))
        knn_due = self.cfg.knn.every_n_epochs > 0 and (last or epoch % self.cfg.knn.every_n_epochs == 0)
        if not (probe_due or knn_due):
            return
        m = self.monitor
        test_feats = self._features(m.test)
        if probe_due:
            with torch.no_grad():
                acc = (self.probe(test_feats).argmax(1) == m.test_labels).float().mean() * 100
            self.results["probe_acc"] = float(acc)
            self.log("test/probe_acc", self.results["probe_acc"], on_epoch=True, sync_dist=True)
        if knn_due:
            from clsp.knn import knn_accuracy

            k = self.cfg.knn.k
            accuracy = knn_accuracy(self._features(m.train), m.train_labels, test_feats, m.test_labels, ks=[k],
                                    temperature=self.cfg.knn.temperature, num_classes=self.probe.out_features
                                    if self.probe is not None else None)
            self.results["knn_acc"] = float(accuracy[k])
            self.log("test/knn_acc", accuracy[k], on_epoch=True, sync_dist=True)

    def _features(self, images) -> Tensor:
        from clsp.features import extract_features

        m = self.monitor
        return extract_features(self.backbone, images, m.mean, m.std, m.size, batch_size=self.cfg.knn.batch_size,
                                device=self.device)


class MomentumMethod(ContrastiveMethod):
    """A method with target encoders that follow online ones (MoCo, All4One, BYOL).

    The method declares its (online, target) pairs by attribute name in `momentum_pairs`; each target
    starts as a frozen copy of its online module and, once per step before the forward (so outside the
    compiled loss), follows it:

        target <- tau target + (1 - tau) online,    tau = momentum_at(s - 1, S, *momentum_range())

    Before step s the target takes the update that solo-learn and the release apply after step s - 1
    (`on_train_batch_end`, then `update_tau`): tau(s - 1), so the first real update uses the base tau.
    Before step 0 the target equals the online encoder and the update changes nothing.
    """

    momentum_pairs: tuple[tuple[str, str], ...] = ()

    def __init__(self, cfg, *args, **kwargs) -> None:
        super().__init__(cfg, *args, **kwargs)
        for online, target in self.momentum_pairs:
            setattr(self, target, frozen_copy(getattr(self, online)))

    def momentum_range(self) -> tuple[float, float]:
        """(tau at the first step, tau at the last)."""
        raise NotImplementedError(f"{type(self).__name__} must define momentum_range")

    def before_step(self, step: int) -> None:
        tau = momentum_at(max(step - 1, 0), self.total_steps, *self.momentum_range())
        momentum_update([getattr(self, online) for online, _ in self.momentum_pairs],
                        [getattr(self, target) for _, target in self.momentum_pairs], tau)
        self.log("train/key_momentum", tau, on_step=True, on_epoch=False, batch_size=1)

    def quality_scores(self, views: list[Tensor], z: list[Tensor]) -> Tensor:
        """cos(m1_i, m3p_i) in the target (momentum) encoder's space: it moves slowly and is not the space the
        term pulls together, so a pair's score does not rise just because the term pulled it. Costs a no-grad
        target forward of x1 and of the P positives."""
        anchor, *positives = self.target_projections([views[0], *views[2:]])
        return torch.stack([(anchor * m).sum(1) for m in positives])

    def target_projections(self, views: list[Tensor]) -> list[Tensor]:
        """L2-normalised projections of each view by the target backbone and projector (the first two pairs)."""
        (_, backbone), (_, projector) = self.momentum_pairs[:2]
        return momentum_projections(getattr(self, backbone), getattr(self, projector), views)
