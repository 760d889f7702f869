"""The ``tukio`` command: validate, show, run and draw workflows.

Each command lives in its own module of this package, exposing
``add_parser(subparsers)`` and ``run(args) -> int``; adding a command is
adding its module name to `COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol, cast

import tukio
from tukio.cli._common import EXIT_BAD_INPUT, EXIT_BROKEN_PIPE, EXIT_CODES_HELP, InputError
from tukio.cli._output import silence_stdout

__all__ = ["COMMANDS", "build_parser", "main"]

# Module names under tukio.cli, in the order `tukio --help` lists them.
COMMANDS: tuple[str, ...] = ("validate", "show", "run", "graph", "inspect", "executions", "recover", "migrate", "serve")


class Command(Protocol):
    """What a command module provides."""

    def add_parser(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        """Add the command's parser, with ``set_defaults(command=run)``."""

    def run(self, args: argparse.Namespace) -> int:
        """Run the command; return the exit code."""


def build_parser() -> argparse.ArgumentParser:
    """Build the parser of ``tukio`` with every command of `COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="tukio",
        description="Validate, inspect, run and draw tukio workflows.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {tukio.__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        module = cast(Command, importlib.import_module(f"tukio.cli.{name}"))
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tukio`` command line.

    Args:
        argv: the arguments (``sys.argv[1:]`` when None).

    Returns:
        The exit code: 0 success, 1 a workflow ended with a failed,
        timed-out or cancelled task, 2 bad input, 141 the standard output
        was closed by its reader (``| head``).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    command = getattr(args, "command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        code = int(command(args))
        # Flushed here, so that a reader gone away is noticed here, not at exit.
        sys.stdout.flush()
    except InputError as exc:
        print(f"tukio: error: {exc}", file=sys.stderr)
        for line in exc.details:
            print(f"  {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # `tukio show m | head -1`: end quietly, as git does
        silence_stdout()
        return EXIT_BROKEN_PIPE
    return code
