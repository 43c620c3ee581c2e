"""One configuration mechanism for every command: OmegaConf structured configs.

A command's settings are a dataclass. A YAML preset (which may name a `base:` preset to extend) and
`key=value` overrides are merged onto it; unknown keys and wrong types are rejected by OmegaConf,
ranges by the dataclass's `__post_init__`, all before any work starts, with the key named in full
(`synthesis.sampler.w`, not `w`). `~key` removes a key the preset sets (the default applies again).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import difflib
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from clsp.errors import ConfigError

T = TypeVar("T")

# The shipped presets live in the package, so that a wheel has them; the checkout's configs/ links here.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class KeyCheckError(ConfigError):
    """A value out of range, raised by a section's `__post_init__` with the key as that section knows it;
    `load_config` names the key in full."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"config key '{key}': {detail}")
        self.key, self.detail = key, detail


def preset_names(folder: str = "") -> list[str]:
    """The shipped presets directly under configs/<folder>, by name."""
    return sorted(p.stem for p in (CONFIG_DIR / folder).glob("*.yaml"))


# The command that runs the presets of each folder under configs/ ("" = configs/ itself).
PRESET_COMMANDS = {"": "clsp pipeline", "pretrain": "clsp pretrain", "diffusion": "clsp diffusion train",
                   "synthesize": "clsp synthesize"}


def resolve_preset(path: str | Path, folder: str | None = "") -> Path:
    """A preset is a YAML path, or the name of one of the command's own shipped presets: those of
    configs/<folder> (`clsp pretrain --config demo` is configs/pretrain/demo.yaml; folder "" is configs/
    itself, the pipeline's; None = the command has no presets). A name that only another command's
    presets have is refused, saying which preset it is and where, so that no command runs another's."""
    p = Path(path)
    candidates = [p, Path(f"{p}.yaml")]
    if folder is not None and not p.is_absolute():
        root = CONFIG_DIR / folder
        candidates += [root / p, Path(f"{root / p}.yaml")]
        if folder and p.parts[0] == folder:  # written with its folder: synthesize/cifar10
            candidates += [CONFIG_DIR / p, Path(f"{CONFIG_DIR / p}.yaml")]
    for c in candidates:
        if c.is_file():
            return c
    elsewhere = [(other, CONFIG_DIR / other / f"{p.name}.yaml") for other in PRESET_COMMANDS
                 if other != folder and not p.is_absolute() and len(p.parts) == 1]
    found = [(other, where) for other, where in elsewhere if where.is_file()]
    if found:
        other, where = found[0]
        ours = (f"; this command's presets: {', '.join(preset_names(folder))}" if folder is not None
                else "; this command has no presets: give a YAML file of its keys (see --print-config)")
        raise ConfigError(f"config {path}: {where.relative_to(CONFIG_DIR.parent)} is a preset of `{PRESET_COMMANDS[other]}`, "
                          f"not of this command (run `{PRESET_COMMANDS[other]} --config {path}`){ours}")
    names = preset_names(folder) if folder is not None else []
    listing = f", or a preset name ({', '.join(names)})" if names else " (this command has no presets)"
    raise ConfigError(f"config {path} not found: give a YAML file{listing}")


def _read_preset(path: Path, seen: tuple[Path, ...] = ()) -> list[dict]:
    """The preset and the chain of presets it extends (`base: other.yaml`), outermost last."""
    if path in seen:
        raise ConfigError(f"config {path}: `base` chain loops back on itself")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {e}".replace("\n", " ")) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at position {e.start}); "
                          "save it as UTF-8") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values")
    base = data.pop("base", None)
    layers = []
    if base:
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        layers = _read_preset(resolve_preset(base_path), seen + (path,))
    return layers + [data]


def load_config(schema: type[T], preset: str | Path | None = None, overrides: Sequence[str] = (), extra: dict | None = None,
                folder: str | None = "", defaults: dict | None = None) -> T:
    """Merge schema defaults <- `defaults` <- preset chain <- `extra` <- `key=value` overrides, validate, instantiate.

    `defaults`: settings that replace the schema's defaults for this run (a model's recommended sampler
    settings), below everything the user wrote.
    `folder`: where the command's own presets are, under configs/ (resolve_preset; None: it has none). An override `~key` removes `key`
    from the preset and `extra`, so that the schema's default applies; `key=null` sets an optional key
    to None (and empties a per-method override)."""
    structured = OmegaConf.structured(schema)
    layers: list[dict] = [copy.deepcopy(defaults)] if defaults else []
    layers += _read_preset(resolve_preset(preset, folder)) if preset is not None else []
    if extra:
        layers.append(copy.deepcopy(extra))
    assignments = []
    for item in overrides:
        if item.startswith("~"):
            _remove(layers, item[1:], structured)
        elif "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (or ~key to remove a preset's key)")
        else:
            assignments.append(item)
    try:
        merged = OmegaConf.merge(structured, *[OmegaConf.create(layer) for layer in layers],
                                 OmegaConf.from_dotlist(assignments))
    except ConfigKeyError as e:
        raise ConfigError(_unknown_key(_key(e), structured, assignments, preset)) from None
    except ValidationError as e:
        raise ConfigError(f"config key '{_key(e)}': {_first_line(e)}{_quoting_hint(_key(e), assignments)}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"config: {_first_line(e)}") from None
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except KeyCheckError as e:
        raise ConfigError(f"config key '{_join(_failing_section(merged), e.key)}': {e.detail}") from None
    except ValidationError as e:
        raise ConfigError(f"config key '{_key(e)}': {_first_line(e)}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"config: {_first_line(e)}") from None


def _quoting_hint(key: str, assignments: Sequence[str]) -> str:
    """A key=value override whose text has ': ' or braces is read as YAML (a mapping); say how to pass text."""
    for item in assignments:
        name, _, value = item.partition("=")
        if name == key and (": " in value or value.lstrip().startswith(("{", "["))):
            return (f". The value of {key}= was read as YAML (a mapping or list); to pass it as text, quote it "
                    f"inside the argument, e.g. {key}='\"...\"', or avoid ': ' in it")
    return ""


def _remove(layers: list[dict], key: str, structured: DictConfig) -> None:
    """`~key`: delete `key` wherever a preset layer sets it (a key no layer sets is already its default)."""
    *parents, leaf = key.split(".")
    for layer in layers:
        node: Any = layer
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    if key not in schema_keys(structured, with_sections=True) and not _under_open_mapping(structured, key):
        raise ConfigError(_unknown_key(key, structured, [key], None))


def _under_open_mapping(structured: DictConfig, key: str) -> bool:
    """A key below a free-form mapping (e.g. method_overrides.moco.lr), which the schema does not list."""
    node: Any = structured
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return isinstance(node, DictConfig) and not dataclasses.is_dataclass(OmegaConf.get_type(node))
        node = node._get_node(part)
    return True


def schema_keys(node: DictConfig, prefix: str = "", with_sections: bool = False) -> list[str]:
    """Every dotted key of a structured config (its leaves; with `with_sections`, its sections too)."""
    keys = []
    for name in node:
        child = node._get_node(name)
        key = f"{prefix}{name}"
        if isinstance(child, DictConfig) and not child._is_none() and dataclasses.is_dataclass(OmegaConf.get_type(child)):
            keys += ([key] if with_sections else []) + schema_keys(child, key + ".", with_sections)
        else:
            keys.append(key)
    return keys


def _unknown_key(key: str, structured: DictConfig, assignments: Sequence[str], preset: Any) -> str:
    typed = next((k for k in (a.split("=", 1)[0] for a in assignments) if k == key or k.startswith(key + ".")), None)
    where = f"override {typed!r}" if typed else (f"preset {preset}" if preset is not None else "the config")
    name = typed or key
    close = difflib.get_close_matches(name, schema_keys(structured), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; see the valid keys with --print-config"
    return f"unknown config key '{name}' (from {where}){hint}"


def _failing_section(merged: DictConfig, path: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The path of the deepest section whose own construction fails (where a range check raised)."""
    for name in merged:
        child = merged._get_node(name)
        if isinstance(child, DictConfig) and not child._is_none() and dataclasses.is_dataclass(OmegaConf.get_type(child)):
            try:
                OmegaConf.to_object(child)
            except ConfigError:
                return _failing_section(child, path + (str(name),))
            except OmegaConfBaseException:
                continue
    return path


def _join(section: tuple[str, ...], key: str) -> str:
    """The full key of `key` as a section named it: sections ("pretrain", "clsp") + "clsp.weight" ->
    pretrain.clsp.weight (a check may already name its own section, or more)."""
    parts = key.split(".")
    for overlap in range(min(len(section), len(parts)), -1, -1):
        if overlap == 0 or list(section[len(section) - overlap:]) == parts[:overlap]:
            return ".".join(list(section[:len(section) - overlap]) + parts)
    return key


def _first_line(e: OmegaConfBaseException) -> str:
    return str(getattr(e, "msg", None) or e).strip().split("\n")[0]


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
        raise KeyCheckError(key, message)


# While --print-config resolves a config, the keys a command cannot run without are collected, not refused.
_MISSING: contextvars.ContextVar[list | None] = contextvars.ContextVar("clsp_missing_keys", default=None)


def check_given(condition: bool, key: str, message: str) -> None:
    """A key the command cannot run without (its --model, --out): refused when the config is run, listed
    (not refused) while `--print-config` shows the config, since errors send users to --print-config."""
    missing = _MISSING.get()
    if condition:
        return
    if missing is None:
        raise KeyCheckError(key, message)
    missing.append(f"{key}: {message}")


@contextlib.contextmanager
def collecting_missing() -> Iterator[list[str]]:
    """Within it, check_given collects the keys not given into the yielded list instead of refusing them."""
    missing: list[str] = []
    token = _MISSING.set(missing)
    try:
        yield missing
    finally:
        _MISSING.reset(token)


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


def added(default: Any) -> Any:
    """A key added after runs were made without it, whose `default` behaves as before it existed: at that value a
    stage's fingerprint (clsp.rundir.fingerprint) leaves it out, so those runs stay complete after an upgrade."""
    return dataclasses.field(default=default, metadata={"neutral": default})


def added_section(factory: Any) -> Any:
    """`added` for a section (a config dataclass): at factory()'s values it is left out of the fingerprint."""
    return dataclasses.field(default_factory=factory, metadata={"neutral": factory()})


def unhashed(default: Any) -> Any:
    """A key that never changes what a stage makes (where it also logs, say): left out of every fingerprint."""
    return dataclasses.field(default=default, metadata={"unhashed": True})


def hashed_dict(cfg: Any) -> dict:
    """to_dict(cfg) as a fingerprint sees it: without its `unhashed` keys, nor its `added` keys at their neutral value."""
    return _drop_unhashed(cfg, to_dict(cfg))


def _drop_unhashed(cfg: Any, values: dict) -> dict:
    if not dataclasses.is_dataclass(cfg):
        return values
    for f in dataclasses.fields(cfg):
        if f.name not in values:
            continue
        value = getattr(cfg, f.name)
        if f.metadata.get("unhashed") or ("neutral" in f.metadata and value == f.metadata["neutral"]):
            del values[f.name]
        elif dataclasses.is_dataclass(value):
            _drop_unhashed(value, values[f.name])
        elif isinstance(value, dict) and isinstance(values[f.name], dict):
            for key, item in value.items():
                if dataclasses.is_dataclass(item) and isinstance(values[f.name].get(key), dict):
                    _drop_unhashed(item, values[f.name][key])
    return values


def check_device(value: str, key: str) -> None:
    """The one device setting of single-process commands: auto (the GPU when there is one), cpu, cuda, cuda:N."""
    ok = value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())
    check(ok, key, f"must be auto, cpu, cuda or cuda:N, got {value!r}")


def torch_device_name(value: str) -> str | None:
    """A `device` setting as the torch device to ask for; None = the GPU when there is one."""
    return None if value == "auto" else value
