"""The `clsp` command. Each stage's package contributes its subcommands through `register(subparsers)`;
handlers import their heavy dependencies lazily so that `clsp --help` answers at once."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from typing import Sequence

from clsp import __version__
from clsp.errors import UserError

COMMAND_MODULES = (
    "clsp.data.cli",
    "clsp.diffusion.cli",
    "clsp.positives.cli",
    "clsp.methods.cli",
    "clsp.eval.cli",
    "clsp.report.cli",
    "clsp.pipeline",
)


def add_config_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """--config PRESET plus trailing key=value overrides, shared by every configurable command."""
    parser.add_argument("--config", default=default, required=default is None,
                        help="YAML preset: a path, or a name under configs/ (e.g. demo)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.max_steps=100")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clsp", description="Contrastive Learning with Synthetic Positives.")
    parser.add_argument("--version", action="version", version=f"clsp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("clsp").setLevel(logging.INFO)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if argv is None:  # run as the `clsp` command: this process's CPU threads are chosen once, here
            from clsp.threads import set_threads

            set_threads()
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"clsp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clsp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
