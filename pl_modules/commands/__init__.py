"""The `playmate` console script: one entry point, one subcommand per module of this package.

Each module here defines ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed arguments; its return value is the exit code). Exceptions
propagate, so a failing command exits non-zero with its traceback, except user errors
(`UserError`), which print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


class UserError(Exception):
    """Bad input from the user (a config key, a file, an argument): printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="playmate",
        description="Playmate training framework: synthetic data, shards, training, generation, evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"pl_modules.commands.{mod.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except UserError as e:
        print(f"playmate {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(code or 0)
