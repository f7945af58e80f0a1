"""The `playmate` console script: one entry point, one subcommand per module of this package.

Each module here defines ``register(subparsers)``, which adds its parser and sets ``func`` (called
with the parsed arguments; its return value is the exit code). Errors a user can act on print one
line naming the key, file or argument and the fix, without a traceback:

    exit 2    bad input: a config key or value, a file, a weights file, a checkpoint, an argument
    exit 1    the data or the run went wrong: too much bad data, non-finite training
    exit 128+N  stopped by signal N after writing a checkpoint (SIGTERM 143, SIGUSR1 138)

Anything else is a bug and propagates with its traceback.
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


def one_line(e: BaseException) -> str:
    """The message of `e` on one line; for an error re-raised from a DataLoader worker (whose text
    embeds the worker's traceback) the original message, which comes last."""
    text = str(e).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


def exit_code(e: BaseException) -> int | None:
    """The exit code of an error a user can act on, None for a bug (imports only once an error occurred)."""
    from configs.loader import ConfigError
    from datamodules.health import BadDataError
    from models.weights import WeightsError
    from pl_modules.inference.inputs import GenerationError
    from pl_modules.module import NonFiniteTrainingError
    from pl_modules.preemption import Preempted

    if isinstance(e, Preempted):
        return e.exit_code
    if isinstance(e, (UserError, ConfigError, GenerationError, WeightsError, FileNotFoundError)):
        return 2
    if isinstance(e, (BadDataError, NonFiniteTrainingError)):
        return 1
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except Exception as e:  # noqa: BLE001 — mapped to one line and an exit code, or re-raised
        code = exit_code(e)
        if code is None:
            raise
        print(f"playmate {args.command}: {'error: ' if code in (1, 2) else ''}{one_line(e)}", file=sys.stderr)
        return code
    return int(code or 0)
