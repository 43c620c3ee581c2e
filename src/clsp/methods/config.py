"""Pretraining's config: `PretrainConfig` and its sections, the methods' own sections (MoCo, NNCLR, All4One)
included. Torch-free, so that `clsp pretrain --help` and `clsp pipeline --help`, built from it, import
neither torch nor Lightning (a method's file imports both: its section lives here, not beside its class)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from clsp.config import added, check, check_choice, check_nonnegative, check_positive, field
from clsp.data.config import DatasetConfig
from clsp.methods import METHODS
from clsp.training_config import TrainerConfig


@dataclass
class MocoConfig:
    queue_size: int = 32768           # per view; a multiple of the global batch
    momentum_start: float = 0.99      # key-encoder momentum, cosine schedule to momentum_end
    momentum_end: float = 0.999


@dataclass
class NNCLRConfig:
    support_size: int = 65536         # a multiple of the global batch
    predictor_hidden_dim: int = 4096


@dataclass
class All4OneConfig:
    support_size: int = 98304         # a multiple of the global batch
    momentum_start: float = 0.99
    momentum_end: float = 1.0
    predictor_hidden_dim: int = 4096
    neighbours: int = 5               # tokens the centroid transformer summarises
    layers: int = 3                   # centroid transformer
    heads: int = 8
    ff_dim: int = 512
    dropout: float = 0.1
    transformer_lr: float = 0.1
    centroid_temperature: float = 0.1
    feature_scale: float = 10.0       # the feature term's scale in the authors' code
    nn_weight: float = 0.5
    centroid_weight: float = 0.5
    feature_weight: float = 0.5

    def __post_init__(self) -> None:
        check(self.neighbours >= 2, "all4one.neighbours", f"must be >= 2, got {self.neighbours}")


@dataclass
class BackboneConfig:
    arch: str = "resnet18"            # resnet18 | resnet50 | resnet10, or timm:NAME (e.g. timm:vit_small_patch16_224,
                                      # timm:resnet50; needs pip install 'clsp[timm]'): a ViT is built for dataset.size
    stem: str = "cifar"               # cifar (32 px) | stl (64 px) | imagenet (224 px); a timm ViT ignores it
    width: int = 64                   # channels of the first stage: 64 is the standard ResNet; 32 costs a quarter


@dataclass
class ProjectorConfig:
    hidden_dim: int = 4096
    out_dim: int = 256
    layers: int = 2                   # the paper: Linear-ReLU-Linear; NNCLR, All4One (solo-learn): 3 with batch norm
    batchnorm: bool = False           # BN after each hidden Linear
    output_batchnorm: Optional[bool] = added(None)  # BN on the output; None = as `batchnorm` (false for BYOL's head)

    def __post_init__(self) -> None:
        check_positive(self.hidden_dim, "projector.hidden_dim")
        check_positive(self.out_dim, "projector.out_dim")
        check(self.layers >= 1, "projector.layers", f"must be >= 1, got {self.layers}")


@dataclass
class ClspConfig:
    weight: float = 0.0               # lambda; 0 = the plain method
    positives: Optional[str] = None   # positives store directory (`clsp synthesize` makes it); set by the pipeline
    third_view: str = "synthetic"     # synthetic (CLSP) | augment (the paper's "+aug" control) | oracle (another
                                      # real image of the anchor's class: an upper bound that needs labels)
    ramp_epochs: float = 0.0          # lambda rises linearly from 0 to `weight` over this many epochs; 0 = constant
    quality: str = "none"             # none | online: weight each candidate's term by a label-free score
                                      # (clsp.methods.quality); store: a score the store carries (none does yet)
    positives_per_step: int = 1       # P candidates per image and step, drawn without replacement from the K
                                      # stored: P extra views (P extra backbone forwards per image), term averaged
    form: str = added("cosine")       # cosine (the paper: 2 - 2 cos(z1, z3)) | contrast (each anchor picks out its
                                      # P positives among the batch's others, StableRep's multi-positive loss:
                                      # clsp.methods.losses.clsp_contrast, at the method's temperature)

    def __post_init__(self) -> None:
        check_nonnegative(self.weight, "clsp.weight")
        check_choice(self.third_view, "clsp.third_view", ["synthetic", "augment", "oracle"])
        check_nonnegative(self.ramp_epochs, "clsp.ramp_epochs")
        check_choice(self.quality, "clsp.quality", ["none", "online", "store"])
        check_positive(self.positives_per_step, "clsp.positives_per_step")
        check_choice(self.form, "clsp.form", ["cosine", "contrast"])


@dataclass
class ProbeConfig:
    lr: float = 0.1                   # online linear probe on detached features (own param group, no decay)
    every: int = 1                    # epochs between test-split scores (the last epoch always); 0 = last only


@dataclass
class KnnConfig:
    every_n_epochs: int = 10          # 0 = never (the last epoch is scored when > 0)
    k: int = 20
    temperature: float = 0.07
    batch_size: int = 512             # feature extraction batch


@dataclass
class PretrainConfig:
    dataset: DatasetConfig = field(DatasetConfig)
    method: str = "simclr"            # a name in clsp.methods.METHODS (supcon is supervised: needs labels)
    backbone: BackboneConfig = field(BackboneConfig)
    projector: ProjectorConfig = field(ProjectorConfig)
    optimizer: str = "sgd"            # sgd | lars | adamw (betas 0.9, 0.999; `momentum` unused)
    lr: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lars_eta: float = 0.02            # LARS as solo-learn's recipes: trust coefficient 0.02, ...
    lars_clip_lr: bool = True         # ... the adapted rate clipped at lr, biases and norms not adapted
    batch_size: int = 1024            # per device
    batch_follows_data: bool = added(False)  # a training split smaller than one global batch: true, the largest batch that
                                      # fits (for MoCo / NNCLR / All4One a divisor of the queue) with lr scaled
                                      # linearly, said at the start; false, refused (the paper presets: their batch
                                      # is the setting being reproduced)
    epochs: int = 1000
    warmup_epochs: int = 10
    warmup_start_lr: float = 1e-3
    temperature: float = 0.2
    augment: str = "simclr"           # augmentation recipe (clsp.data.augment): simclr | moco | asymmetric
                                      # (solo-learn's: solarisation on the second view only) | flip (tests)
    crop_min_scale: float = 0.08      # smallest crop area of the random resized crop (the paper; solo-learn's name)
    crop_source_size: Optional[int] = None  # crop the real views (to dataset.size) from the images loaded at
                                      # this side; STL-10 as the release: 96 (views of 64 px from the 96 px
                                      # originals). None: dataset.size. The store, probes and encoder stay at dataset.size
    moco: MocoConfig = field(MocoConfig)
    nnclr: NNCLRConfig = field(NNCLRConfig)
    all4one: All4OneConfig = field(All4OneConfig)
    clsp: ClspConfig = field(ClspConfig)
    probe: ProbeConfig = field(ProbeConfig)
    knn: KnnConfig = field(KnnConfig)
    trainer: TrainerConfig = field(TrainerConfig)
    workers: int = 8                  # DataLoader workers, streaming sets only
    seed: int = 0
    out_dir: str = "runs/pretrain"

    def __post_init__(self) -> None:
        check_choice(self.method, "method", METHODS)
        check_choice(self.optimizer, "optimizer", ["sgd", "lars", "adamw"])
        check_choice(self.augment, "augment", ["simclr", "moco", "asymmetric", "flip"])
        for key in ("lr", "batch_size", "epochs", "temperature", "warmup_start_lr"):
            check_positive(getattr(self, key), key)
        check_nonnegative(self.weight_decay, "weight_decay")
        check(0.0 < self.crop_min_scale <= 1.0, "crop_min_scale", f"must be in (0, 1], got {self.crop_min_scale}")
        check(0 <= self.warmup_epochs < self.epochs, "warmup_epochs", f"must be in [0, epochs), got {self.warmup_epochs}")
        check(self.warmup_start_lr <= self.lr, "warmup_start_lr", f"must be <= lr ({self.lr}), got {self.warmup_start_lr}")
        check(self.crop_source_size is None or self.crop_source_size >= 8, "crop_source_size",
              f"must be >= 8 (or null), got {self.crop_source_size}")
        check_nonnegative(self.probe.every, "probe.every")
        check_nonnegative(self.knn.every_n_epochs, "knn.every_n_epochs")

    @property
    def third_view(self) -> Optional[str]:
        """The third view a step makes, or None when the CLSP term is off."""
        return self.clsp.third_view if self.clsp.weight > 0 else None
