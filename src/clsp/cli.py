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
    """Run one command. What a user or the machine can cause (bad input, a full disk, a read-only folder)
    ends with one line and exit code 2; Ctrl-C with exit code 130; only bugs print a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("clsp").setLevel(logging.INFO)
    logging.raiseExceptions = False  # a log file on a full disk must not print a traceback per line
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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
