"""One configuration mechanism for every command: OmegaConf structured configs.

A command's settings are a dataclass. A YAML preset (which may name a `base:` preset to extend) and
`key=value` overrides are merged onto it; unknown keys and wrong types are rejected by OmegaConf,
ranges by the dataclass's `__post_init__`, all before any work starts, with the key named.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Sequence, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from clsp.errors import ConfigError

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # in the package, so that a wheel has them (the checkout links configs/ here)


def resolve_preset(path: str | Path) -> Path:
    """A preset is a YAML path, or a name under configs/ (with or without .yaml)."""
    p = Path(path)
    candidates = [p, p.with_suffix(".yaml"), CONFIG_DIR / p, (CONFIG_DIR / p).with_suffix(".yaml")]
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(f"config file {path} not found (give a YAML path or a preset name under {CONFIG_DIR})")


def _read_preset(path: Path, seen: tuple[Path, ...] = ()) -> list[dict]:
    """The preset and the chain of presets it extends (`base: other.yaml`), outermost last."""
    if path in seen:
        raise ConfigError(f"config {path}: `base` chain loops back on itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values")
    base = data.pop("base", None)
    layers = []
    if base:
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        layers = _read_preset(resolve_preset(base_path), seen + (path,))
    return layers + [data]


def load_config(schema: type[T], preset: str | Path | None = None, overrides: Sequence[str] = (), extra: dict | None = None) -> T:
    """Merge schema defaults <- preset chain <- `extra` <- `key=value` overrides, validate, instantiate."""
    layers: list[Any] = [OmegaConf.structured(schema)]
    if preset is not None:
        layers += [OmegaConf.create(d) for d in _read_preset(resolve_preset(preset))]
    if extra:
        layers.append(OmegaConf.create(extra))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value")
    if overrides:
        layers.append(OmegaConf.from_dotlist(list(overrides)))
    try:
        merged = OmegaConf.merge(*layers)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except ConfigKeyError as e:
        raise ConfigError(f"unknown config key '{_key(e)}' (check the spelling; see the preset files under configs/)") from None
    except ValidationError as e:
        raise ConfigError(f"config key '{_key(e)}': {e.msg}".replace("\n", " ")) from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"config: {getattr(e, 'msg', e)}".replace("\n", " ")) from None


def _key(e: OmegaConfBaseException) -> str:
    full = getattr(e, "full_key", None)
    if full:
        return str(full)
    key = getattr(e, "key", None)
    return str(key) if key is not None else str(e).split("\n")[0]


def to_dict(cfg: Any) -> dict:
    """A plain dict of a config dataclass (for records and hashes)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


# -- range checks used in __post_init__ ------------------------------------------------------------

def check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config key '{key}': {message}")


def check_positive(value: float, key: str) -> None:
    check(value > 0, key, f"must be > 0, got {value}")


def check_nonnegative(value: float, key: str) -> None:
    check(value >= 0, key, f"must be >= 0, got {value}")


def check_range(value: float, key: str, low: float, high: float) -> None:
    check(low <= value <= high, key, f"must be in [{low}, {high}], got {value}")


def check_choice(value: Any, key: str, choices: Iterable[Any]) -> None:
    choices = list(choices)
    check(value in choices, key, f"must be one of {choices}, got {value!r}")


def field(default_factory=None, **kw):
    """Shorthand for dataclasses.field(default_factory=...)."""
    return dataclasses.field(default_factory=default_factory, **kw)
