"""The frozen encoder an evaluation reads: its backbone, the input recipe it was trained with, its record."""

from __future__ import annotations

from pathlib import Path

import torch

from clsp.features import default_device, extract_features


class Encoder:
    """A frozen encoder read from its file, with the input recipe (size, mean, std) it was trained with."""

    def __init__(self, path, device: str | torch.device | None = None) -> None:
        from clsp.models.encoder import load_encoder, resolve_encoder_path

        self.path = resolve_encoder_path(path)
        self.device = default_device(device)
        self.backbone, self.meta = load_encoder(self.path, self.device)
        if self.device.type == "cuda":
            self.backbone.to(memory_format=torch.channels_last)
        self.size = int(self.meta["image_size"])
        self.mean, self.std = tuple(self.meta["mean"]), tuple(self.meta["std"])
        self._record: dict | None = None

    def features(self, images, flip: bool = False, batch_size: int = 512, progress: bool = True,
                 recipe: str = "eval") -> torch.Tensor:
        return extract_features(self.backbone, images, self.mean, self.std, self.size, batch_size=batch_size,
                                device=self.device, flip=flip, progress=progress, recipe=recipe)

    def record(self) -> dict:
        """The `encoder` field of metrics.json (the file's hash is computed once)."""
        from clsp.eval.metrics import encoder_record

        if self._record is None:
            self._record = encoder_record(self.path, self.meta)
        return dict(self._record)

    def dataset_config(self, cfg):
        """The dataset section with the image side set to the encoder's input resolution when unset. A side
        other than the one the encoder was trained at is allowed (a resolution study) but said: the images are
        loaded at it, then resized to the encoder's input, which is not the data the encoder saw."""
        import dataclasses
        import logging

        if cfg.size is None:
            return dataclasses.replace(cfg, size=self.size)
        if int(cfg.size) != self.size:
            logging.getLogger("clsp").warning(
                f"the encoder was trained at {self.size} px; the images are loaded at {cfg.size} px "
                f"(--size / dataset.size) and resized to {self.size} px: leave --size out to evaluate as trained")
        return cfg


def open_encoder(encoder_path, kind: str, out_dir=None, device=None):
    """The frozen `Encoder` an evaluation reads, and its output directory: `out_dir`, else beside the
    encoder, under eval/<kind>/."""
    from clsp.eval.metrics import default_out_dir

    encoder = Encoder(encoder_path, device)
    return encoder, Path(out_dir) if out_dir is not None else default_out_dir(encoder.path, kind)
