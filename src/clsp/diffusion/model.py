"""A diffusion model on disk: diffusers' layout, so that public checkpoints and ours are interchangeable.

    MODEL/model_index.json              (so that diffusers' DDPMPipeline.from_pretrained(MODEL) works too)
    MODEL/unet/config.json + diffusion_pytorch_model.safetensors
    MODEL/scheduler/scheduler_config.json

Any local directory that diffusers itself loads with `UNet2DModel.from_pretrained` +
`DDPMScheduler.from_pretrained` loads here too: the pipeline layout above, or a flat folder with
config.json, the weights (.safetensors or .bin) and scheduler_config.json at the top, which is how
google/ddpm-cifar10-32 is published. A class-conditional UNet (`num_class_embeds` = classes + 1, the
last its null class, as `clsp diffusion train conditional=true` makes) loads too. What clsp cannot
sample with (another model class, another kind of class conditioning, a config without a noise
schedule) is a UserError naming the file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from clsp.errors import UserError
from clsp.io import read_json, write_json_atomic

SCHEDULER_CONFIG = "scheduler_config.json"
SHIPPED_PREFIX = "clsp:"          # clsp:NAME = a model that ships with the package (clsp/pretrained/NAME)
RECORD = "record.json"            # how a shipped model was made: its config, commit, steps, time, loss, quality


def shipped_models() -> list[str]:
    """Names of the diffusion models in the package (folders with a record; `reference/` holds classifiers)."""
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / RECORD).is_file()) if SHIPPED_DIR.is_dir() else []


def resolve_model_dir(model_dir: str | os.PathLike) -> Path:
    """A model directory, or `clsp:NAME` for one of the models shipped in the package (the CPU demo's)."""
    text = str(model_dir)
    if not text.startswith(SHIPPED_PREFIX):
        return Path(model_dir)
    name = text[len(SHIPPED_PREFIX):]
    if name not in shipped_models():
        raise UserError(f"no shipped diffusion model '{name}'; clsp ships {', '.join(shipped_models()) or 'none'} "
                        "(use clsp:NAME), or give a model directory")
    return SHIPPED_DIR / name


SHIPPED_DIR = Path(__file__).resolve().parents[1] / "pretrained"
RECOMMENDED_SAMPLER = "recommended_sampler"   # the record's sampler settings (SamplerConfig keys) commands default to


def recommended_sampler(model_dir: str | os.PathLike) -> dict:
    """The sampler settings a model's record.json recommends ({} when it has none, or no record).

    A small UNet can ignore its bottleneck (the shipped 16 px model keeps its anchor's class at chance with
    `layers = 1`), so the settings that make a model's candidates positives belong to the model: the commands
    that sample with it (`clsp synthesize`, `clsp diffusion sample`, `clsp pipeline`) start from them, and a
    preset, flag or key=value still sets any of them. To change what a shipped model recommends, edit the
    `recommended_sampler` of src/clsp/pretrained/NAME/record.json."""
    try:
        root = resolve_model_dir(model_dir)
    except UserError:
        return {}                                 # the command reports the bad name where it loads the model
    from clsp.io import read_json_object

    record = read_json_object(root / RECORD) if (root / RECORD).is_file() else None
    settings = (record or {}).get(RECOMMENDED_SAMPLER)
    return dict(settings) if isinstance(settings, dict) else {}


def load_model(model_dir: str | os.PathLike):
    """(UNet2DModel in eval mode, scheduler config dict) from a diffusers directory (pipeline or flat layout)."""
    from diffusers import UNet2DModel

    root = resolve_model_dir(model_dir)
    if not root.is_dir():
        raise UserError(f"diffusion model directory {root} does not exist; train one with `clsp diffusion train` "
                        "or point --model at a local diffusers directory (unet/ + scheduler/, or a flat copy of a "
                        "public checkpoint such as google/ddpm-cifar10-32)")
    unet_dir = _first_with(root, ["unet", "."], "config.json")
    if unet_dir is None:
        raise UserError(f"{root} is not a diffusers model directory: neither unet/config.json nor config.json")
    unet_config = _read_config(unet_dir / "config.json")
    if unet_config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise UserError(f"{unet_dir / 'config.json'} describes a {unet_config['_class_name']}, not the unconditional "
                        "UNet2DModel clsp samples with")
    if unet_config.get("class_embed_type") is not None:
        raise UserError(f"{unet_dir / 'config.json'} describes a UNet conditioned by class_embed_type="
                        f"{unet_config['class_embed_type']}; clsp samples unconditional UNets and class-conditional ones "
                        "with a class table (num_class_embeds, its last class the null class)")
    scheduler_dir = _first_with(root, ["scheduler", "."], SCHEDULER_CONFIG)
    if scheduler_dir is None:
        raise UserError(f"{root} has neither scheduler/{SCHEDULER_CONFIG} nor {SCHEDULER_CONFIG}; a diffusers model "
                        "directory needs one (the noise schedule the UNet was trained with)")
    scheduler_file = scheduler_dir / SCHEDULER_CONFIG
    scheduler_config = _read_config(scheduler_file)
    if "num_train_timesteps" not in scheduler_config:
        raise UserError(f"{scheduler_file} does not describe a noise schedule (no num_train_timesteps)")
    try:
        unet = UNet2DModel.from_pretrained(str(unet_dir), local_files_only=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, EnvironmentError) as e:
        raise UserError(f"cannot load the UNet from {unet_dir}: {str(e).splitlines()[0]}") from None
    return unet.float().eval(), scheduler_config              # weights stored in half precision compute in float32


def _first_with(root: Path, subfolders: list[str], filename: str) -> Path | None:
    """The first of root/<subfolder> holding `filename` (diffusers' pipeline layout first, then flat)."""
    for sub in subfolders:
        if (root / sub / filename).is_file():
            return root / sub
    return None


def save_model(model_dir: str | os.PathLike, unet, scheduler_config: dict) -> Path:
    """Write the UNet (safetensors) and scheduler config; the directory appears complete or not at all."""
    import diffusers

    final = Path(model_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        unet.save_pretrained(str(tmp / "unet"), safe_serialization=True)
        scheduler_config = {"_class_name": "DDPMScheduler", **scheduler_config}
        scheduler_config["_diffusers_version"] = diffusers.__version__
        write_json_atomic(tmp / "scheduler" / SCHEDULER_CONFIG, scheduler_config)
        write_json_atomic(tmp / "model_index.json", {
            "_class_name": "DDPMPipeline", "_diffusers_version": diffusers.__version__,
            "unet": ["diffusers", type(unet).__name__], "scheduler": ["diffusers", scheduler_config["_class_name"]],
        })
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def check_model_matches(unet, image_size: int, channels: int, size_key: str = "dataset.size / --size") -> None:
    """A model sampling images of another size or channel count than the data is a user error; `size_key`
    is the key (and flag) that sets the data's size in the calling command."""
    cfg = unet.config
    size = cfg.sample_size
    sizes = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    if size is not None and sizes != (image_size, image_size):
        raise UserError(f"the diffusion model makes {sizes[0]}x{sizes[1]} images but the data is {image_size}x{image_size}; "
                        f"use a model trained at this size or resize the data ({size_key}"
                        + (f" {sizes[0]})" if sizes[0] == sizes[1] else ")"))
    if cfg.in_channels != channels or cfg.out_channels != channels:
        raise UserError(f"the diffusion model has {cfg.in_channels} input / {cfg.out_channels} output channels "
                        f"but the data has {channels}")


def _read_config(path: Path) -> dict:
    try:
        data = read_json(path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object")
    return data


def _replace_dir(new: Path, final: Path) -> None:
    """Rename `new` onto `final`; an existing `final` is moved aside first and removed after."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", suffix=".tmp", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

