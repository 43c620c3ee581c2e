"""The `clsp` command.

Every command is driven one way, as OmegaConf / Hydra-style tools are: its settings are one config
dataclass; `--config PRESET` and `key=value` overrides set any key (`~key` removes one a preset sets),
a few named flags set the common keys (each flag an alias of one key, its type and default read from
the dataclass, so each default is written once), and `--print-config` prints the resolved config
without running. `--device` (auto | cpu | cuda) and `--out DIR` (the directory the command writes
into) mean the same in every command that has them.

`clsp --help` and `--version` import no command module: a command's module, and torch with it, is
imported only when that command runs or shows its own help.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import logging
import sys
import typing
from typing import Any, Callable, Sequence

from clsp import __version__
from clsp.errors import ConfigError, UserError

# name: (the module whose `register(subparsers)` adds it, its one-line help). Commands of one module are adjacent.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("clsp.data.cli", "inspect datasets and augmentations"),
    "diffusion": ("clsp.diffusion.cli", "train a DDPM; sample plain or CLSP-interpolated images"),
    "synthesize": ("clsp.positives.cli", "generate K synthetic positives for every image of a split into a store"),
    "positives": ("clsp.positives.cli", "look at a positives store: preview grid, statistics"),
    "pretrain": ("clsp.methods.cli", "train an encoder with SimCLR / MoCo v2+ / NNCLR / All4One / BYOL / SupCon, with or without CLSP"),
    "eval": ("clsp.eval.cli", "evaluate an encoder (knn, linear, transfer, embed, hardness) or a positives store (positives)"),
    "fid": ("clsp.eval.cli", "FID of plain diffusion samples against the training set (torch-fidelity)"),
    "report": ("clsp.report.cli", "write RUN_DIR/report.html from a pipeline run directory"),
    "pipeline": ("clsp.pipeline", "run every stage: diffusion -> positives -> pretraining -> evaluation -> report"),
}


# Commands whose work threads do not speed up (reading, plotting, small grids): no thread line.
LIGHT_COMMANDS = {"data", "positives", "report"}


def build_parser(commands: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser with `commands` built in full (their modules imported) and the others as names only."""
    parser = argparse.ArgumentParser(prog="clsp", description="Contrastive Learning with Synthetic Positives.",
                                     formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=16),
                                     epilog="Each command has --help; `clsp COMMAND --print-config` shows its settings.")
    parser.add_argument("--version", action="version", version=f"clsp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = {COMMANDS[c][0] for c in commands}
    for name, (module, text) in COMMANDS.items():
        if name in sub.choices:
            continue
        if module in modules:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=text)
    return parser


def all_commands_parser() -> argparse.ArgumentParser:
    """Every command built in full (for tests and documentation)."""
    return build_parser(list(COMMANDS))


def add_command(subparsers, name: str, **kwargs) -> argparse.ArgumentParser:
    """A top-level command, its one-line help taken from COMMANDS."""
    return subparsers.add_parser(name, help=COMMANDS[name][1], **kwargs)


# -- commands built from their config dataclass -----------------------------------------------------

@dataclasses.dataclass
class Flag:
    """`--name VALUE` (or a positional) that sets one config key."""

    key: str
    help: str = ""


# The two flags every training command (diffusion train, pretrain, pipeline) takes, for the keys its config names so.
TRAINING_FLAGS = {"--out": Flag("out_dir", "the run directory"),
                  "--device": Flag("trainer.accelerator", "auto | cpu | cuda")}


def field_flags(section: type, prefix: str = "", only: Sequence[str] = ()) -> dict[str, Flag]:
    """`--field-name` for each field of config dataclass `section` (or each in `only`), setting key
    `prefix + field`, described by the comment written beside the field: a flag and its key say it once."""
    comments = field_comments(section)
    names = list(only) or [f.name for f in dataclasses.fields(section)]
    return {"--" + name.replace("_", "-"): Flag(prefix + name, comments.get(name, "")) for name in names}


def field_comments(section: type) -> dict[str, str]:
    """The comment beside each field in a dataclass's source, with the comment-only lines that continue it."""
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    source = textwrap.dedent(inspect.getsource(section))
    lines = source.splitlines()
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT}
    found = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.end_lineno in comments:
            line, text = node.end_lineno, []
            while line in comments and (line == node.end_lineno or lines[line - 1].lstrip().startswith("#")):
                text.append(comments[line])
                line += 1
            found[node.target.id] = " ".join(text)
    return found


def config_command(parser: argparse.ArgumentParser, schema: type, run: Callable[[Any], Any], *,
                   flags: dict[str, Flag] | None = None, positionals: dict[str, Flag] | None = None,
                   presets: str | None = None, examples: Sequence[str] = (), check: Callable[[Any], Any] | None = None,
                   defaults: Callable[[Any], dict] | None = None) -> None:
    """Make `parser` the command for config dataclass `schema`; `run(cfg)` does the work.

    `flags`: {"--k": Flag("k", "candidates per image")}; the flag's type and default come from the schema.
    `positionals`: {"STORE": Flag("store", ...)}. `presets`: the folder under configs/ of the command's own
    presets ("" = configs/ itself; None = it has none, --config takes a YAML file). `examples`: command lines shown under --help (and run by the tests). `check(cfg)`: further
    validation that needs no data (run before --print-config prints, and before `run`). `defaults(cfg)`:
    settings the resolved config implies for keys the user did not set (e.g. the sampler settings its model's
    record recommends); the config is then resolved again with them below the preset, flags and overrides."""
    flags, positionals = dict(flags or {}), dict(positionals or {})
    for metavar, flag in positionals.items():
        parser.add_argument(_dest(flag.key, "_pos_"), metavar=metavar, help=f"{flag.help} [{flag.key}]")
    for name, flag in flags.items():
        kind = _field_type(schema, flag.key)
        if kind is bool:
            parser.add_argument(name, dest=_dest(flag.key), action=argparse.BooleanOptionalAction, default=None,
                                help=_flag_help(schema, flag))
        else:
            parser.add_argument(name, dest=_dest(flag.key), metavar=name.lstrip("-").upper().replace("-", "_"),
                                default=None, help=_flag_help(schema, flag))
    where = "" if presets is None else f", or the name of a preset in configs/{presets + '/' if presets else ''}"
    parser.add_argument("--config", default=None, metavar="PRESET", help=f"YAML preset: a file{where}")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit without running")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="set any config key (e.g. the keys --print-config shows); ~key removes a preset's key")
    if examples:  # kept as written (one command a line); the description is wrapped here instead
        import shutil
        import textwrap

        width = max(40, min(100, shutil.get_terminal_size().columns - 2))
        parser.description = parser.description and textwrap.fill(parser.description, width)
        parser.epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter

    def resolve(args: argparse.Namespace) -> Any:
        """The command's config: schema <- preset <- flags <- key=value overrides, validated."""
        from clsp.config import load_config

        extra: dict = {}
        for name, flag in list(flags.items()) + list(positionals.items()):
            value = getattr(args, _dest(flag.key, "_flag_" if name.startswith("-") else "_pos_"))
            if value is not None:
                _set(extra, flag.key, _convert(schema, flag.key, value, name))
        cfg = load_config(schema, args.config, args.overrides, extra=extra, folder=presets)
        implied = defaults(cfg) if defaults is not None else None
        if implied:
            cfg = load_config(schema, args.config, args.overrides, extra=extra, folder=presets, defaults=implied)
        if check is not None:
            check(cfg)
        return cfg

    def execute(args: argparse.Namespace) -> int:
        from clsp.config import collecting_missing, to_yaml

        if args.print_config:  # shown even before the keys a run needs (--model, --out) are given
            with collecting_missing() as missing:
                cfg = resolve(args)
            print(to_yaml(cfg), end="")
            if missing:
                print(f"clsp: to run, also set: {'; '.join(missing)}", file=sys.stderr)
            return 0
        return int(run(resolve(args)) or 0)

    parser.set_defaults(func=execute, resolve=resolve)


def model_sampler(section: str, model_key: str) -> Callable[[Any], dict]:
    """`defaults` for a command that samples with the model its key `model_key` names: the sampler settings
    that model's record recommends (clsp.diffusion.model.recommended_sampler), placed at `section`."""
    def implied(cfg: Any) -> dict:
        from clsp.diffusion.model import recommended_sampler

        model = cfg
        for part in model_key.split("."):
            model = getattr(model, part)
        settings = recommended_sampler(model) if model else {}
        tree: dict = {}
        if settings:
            _set(tree, section, settings)
        return tree

    return implied


def resolve_config(argv: Sequence[str]) -> Any:
    """The resolved config a command line would run with (what --print-config prints), without running it."""
    args = parse(build_parser(_command(argv)), argv)
    if not hasattr(args, "resolve"):
        raise ValueError(f"`clsp {' '.join(argv[:2])}` has no config")
    return args.resolve(args)


def _dest(key: str, kind: str = "_flag_") -> str:
    return kind + key.replace(".", "__")


def _set(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def _field_type(schema: type, key: str) -> Any:
    """The type of a dotted key of a dataclass schema (Optional[X] is X)."""
    owner: Any = schema
    for part in key.split("."):
        hints = typing.get_type_hints(owner)
        assert part in hints, f"{schema.__name__} has no key {key}"
        owner = _unwrap(hints[part])
    return owner


def _unwrap(kind: Any) -> Any:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if typing.get_origin(kind) is typing.Union and len(args) == 1 else kind


def _default(schema: type, key: str) -> Any:
    """A key's default, read from the schema's defaults (None where a section defaults to None)."""
    from omegaconf import OmegaConf

    return OmegaConf.select(_defaults(schema), key, default=None)


@functools.lru_cache(maxsize=None)
def _defaults(schema: type) -> Any:
    """The schema's defaults as an OmegaConf tree, built once per schema (not once per flag: help stays fast)."""
    from omegaconf import OmegaConf

    return OmegaConf.structured(schema)


def _flag_help(schema: type, flag: Flag) -> str:
    default = _default(schema, flag.key)
    shown = "" if default in (None, "", []) else f", default {','.join(map(str, default)) if isinstance(default, list) else default}"
    return f"{flag.help} [{flag.key}{shown}]".strip()


def _convert(schema: type, key: str, value: Any, name: str) -> Any:
    """A flag's text as the key's type; a list is given comma-separated (--milestones 60,80)."""
    kind = _field_type(schema, key)
    if kind is bool or not isinstance(value, str):
        return value
    if typing.get_origin(kind) in (list, typing.List, Sequence):
        (item,) = typing.get_args(kind) or (str,)
        return [_scalar(item, part.strip(), name) for part in value.split(",") if part.strip()]
    return _scalar(kind, value, name)


def _scalar(kind: Any, text: str, name: str) -> Any:
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    return text


# -- the entry point ----------------------------------------------------------------------------------

def _command(argv: Sequence[str]) -> list[str]:
    """The command named in argv (its first word that is not an option), if it is one."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return [first] if first in COMMANDS else []


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """parse_args, but key=value overrides may also follow options (`NAME --json a=1`), which argparse
    alone leaves unrecognised once the positionals before them were taken."""
    args, extra = parser.parse_known_args(list(argv))
    stray = [a for a in extra if a.startswith("-") or not ("=" in a or a.startswith("~"))]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. What a user or the machine can cause (bad input, a full disk, a read-only folder)
    ends with one line and exit code 2; Ctrl-C with exit code 130; only bugs print a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("clsp").setLevel(logging.INFO)
    logging.raiseExceptions = False  # a log file on a full disk must not print a traceback per line
    as_command = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(build_parser(_command(argv)), argv)
    try:
        if as_command:  # run as the `clsp` command: this process's CPU threads are chosen once, here
            from clsp.threads import set_threads

            set_threads(say=args.command not in LIGHT_COMMANDS and not getattr(args, "print_config", False))
        return int(args.func(args) or 0)
    except UserError as e:
        return _fail(str(e))
    except OSError as e:
        from clsp.errors import describe_os_error

        return _fail(describe_os_error(e))
    except KeyboardInterrupt:
        print("clsp: interrupted", file=sys.stderr)
        return 130


def _fail(message: str) -> int:
    print(f"clsp: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
