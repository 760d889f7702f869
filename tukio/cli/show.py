"""``tukio show MODULE``: the tasks a module registers."""

from __future__ import annotations

import argparse
from typing import Any

from tukio.cli._common import EXIT_BAD_INPUT, EXIT_OK, add_command, first_doc_line, tasks_of_module
from tukio.task.registry import TaskRegistry

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``show`` command."""
    parser = add_command(
        subparsers,
        "show",
        "list the tasks a module registers",
        ("Import MODULE and list the tasks it registers, each with the first line of its docstring."),
        {EXIT_OK: "success", EXIT_BAD_INPUT: "the module cannot be found or imported"},
    )
    parser.add_argument("module", metavar="MODULE", help="a dotted module name or the path of a .py file")
    parser.set_defaults(command=run)


def describe_task(name: str) -> str:
    """The first docstring line of a registered task (its class's for a holder)."""
    klass, coro_fn = TaskRegistry.get(name)
    return (first_doc_line(klass) if klass is not None else "") or first_doc_line(coro_fn)


def run(args: Any) -> int:
    """Print one task per line: its name, then its summary."""
    _, names = tasks_of_module(args.module)
    if not names:
        print(f"{args.module}: registers no task")
        return EXIT_OK
    width = max(len(name) for name in names)
    for name in names:
        print(f"{name:<{width}}  {describe_task(name)}".rstrip())
    return EXIT_OK
