"""UNet2DModel presets: the DDPM CIFAR-10 layout (the paper's model) and two smaller ones.

`ddpm-cifar10` is exactly the layout of the public google/ddpm-cifar10-32 checkpoint and of the
release's UNet (35.7M parameters, attention at the 16x16 level of both paths, i.e. the second down
block and the third up block, and in the middle block, single-head attention), so a local copy of
that checkpoint and a model trained here are interchangeable. `small` halves the channels (about 9M;
Fashion-MNIST, short GPU runs); `tiny` (about 1M) is for CPU tests. `mini` (4.3M) is the CPU demo's
16 px model (see its comment). `ddpm-stl10` is the release's 64 px STL-10 layout (PAPER.md): base
channels 192, multipliers [1, 2, 3, 4], attention at levels 1 and 2 (32x32 and 16x16 at 64 px), 2
residual blocks, dropout 0.15. diffusers lists up blocks from the deepest level up, so an attention
level i of n sits at up index n - 1 - i.
"""

from __future__ import annotations

from dataclasses import dataclass

from clsp.errors import UserError


@dataclass(frozen=True)
class Preset:
    block_out_channels: tuple[int, ...]
    down_block_types: tuple[str, ...]
    up_block_types: tuple[str, ...]
    layers_per_block: int
    norm_num_groups: int
    dropout: float          # the training dropout of the layout (DDPM: 0.1 on CIFAR-10)

    @property
    def downsampling(self) -> int:
        """How many times the image side is halved: the side must be a multiple of 2 ** this."""
        return len(self.block_out_channels) - 1


_DDPM_DOWN = ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D")
_DDPM_UP = ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")

PRESETS: dict[str, Preset] = {
    "ddpm-cifar10": Preset((128, 256, 256, 256), _DDPM_DOWN, _DDPM_UP, 2, 32, 0.1),
    "small": Preset((64, 128, 128, 128), _DDPM_DOWN, _DDPM_UP, 2, 32, 0.1),
    "ddpm-stl10": Preset((192, 384, 576, 768), ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                         ("UpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), 2, 32, 0.15),
    "tiny": Preset((32, 64, 64), ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                   ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), 1, 16, 0.0),
    # The CPU demo's model (16 px grey): the DDPM layout scaled to 16 px. Four levels put the bottleneck at
    # 2x2, 1/8 of the image side as the DDPM's 4x4 is at 32 px; with tiny's three levels (4x4, 1/4 of the
    # side) the up path followed the sample's own skip connections and the mixed-in anchor barely mattered.
    # Its up path has attention at 4x4 (up index 1), one level deeper than its down path's 8x8: it was defined
    # with the former, wrong, up-block order of ddpm-cifar10 when the shipped clsp:fashion-mnist-16 was trained,
    # and keeps that order so that the preset builds the network the shipped weights belong to.
    "mini": Preset((32, 64, 128, 128), _DDPM_DOWN, ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), 1, 16, 0.0),
}


def check_image_size(preset: str, image_size: int) -> None:
    p = _preset(preset)
    factor = 2 ** p.downsampling
    if image_size < factor or image_size % factor:
        raise UserError(f"UNet preset '{preset}' halves the image {p.downsampling} times, so the image side must be a "
                        f"multiple of {factor}; got {image_size} (resize the dataset with dataset.size=...)")


def make_unet(preset: str, image_size: int, dropout: float | None = None, channels: int = 3, num_classes: int = 0):
    """A freshly initialised UNet2DModel of the named layout for square images of `image_size` with
    `channels` channels (3, or 1 for grey data: a grey set is modelled as grey, never as RGB). With
    `num_classes` = C > 0 it is class-conditional: a table of C + 1 class embeddings added to the time
    embedding (diffusers' `num_class_embeds`), the last one the null class of classifier-free guidance."""
    from diffusers import UNet2DModel

    p = _preset(preset)
    check_image_size(preset, image_size)
    return UNet2DModel(
        sample_size=image_size, in_channels=channels, out_channels=channels,
        block_out_channels=p.block_out_channels, down_block_types=p.down_block_types, up_block_types=p.up_block_types,
        layers_per_block=p.layers_per_block, norm_num_groups=p.norm_num_groups,
        dropout=p.dropout if dropout is None else dropout,
        # The original DDPM conventions (those of google/ddpm-cifar10-32):
        downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6,
        attention_head_dim=None, time_embedding_type="positional", act_fn="silu", center_input_sample=False,
        num_class_embeds=num_classes + 1 if num_classes else None,
    )


def _preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown UNet preset '{name}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
