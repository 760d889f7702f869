"""``tukio show MODULE``: the tasks a module registers; ``tukio show --store S [--version V]``: template versions."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tukio.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    InputError,
    add_command,
    first_doc_line,
    table,
    tasks_of_module,
)
from tukio.cli._store import add_store_options, open_store
from tukio.errors import DamagedRecordError, UnknownVersionError
from tukio.task.registry import TaskRegistry

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``show`` command."""
    parser = add_command(
        subparsers,
        "show",
        "list the tasks a module registers, or the template versions a store keeps",
        (
            "Import MODULE and list the tasks it registers, each with the first line of its docstring. "
            "With --store instead, list the template versions the journal keeps (each execution is pinned "
            "to one); with --version V too, print that version's template as JSON."
        ),
        {
            EXIT_OK: "success",
            EXIT_BAD_INPUT: "the module cannot be found or imported; unreadable store, unknown version",
        },
    )
    parser.add_argument("module", nargs="?", metavar="MODULE", help="a dotted module name or the path of a .py file")
    add_store_options(parser, required=False)
    parser.add_argument("--version", metavar="V", help="with --store: print this template version as JSON")
    parser.set_defaults(command=run)


def describe_task(name: str) -> str:
    """The first docstring line of a registered task (its class's for a holder)."""
    klass, coro_fn = TaskRegistry.get(name)
    return (first_doc_line(klass) if klass is not None else "") or first_doc_line(coro_fn)


def run(args: Any) -> int:
    """Print one task per line: its name, then its summary (or the versions of a store).

    Raises:
        InputError: neither MODULE nor --store (or both) are given, the
            store cannot be read, or the version is unknown.
    """
    if (args.module is None) == (args.store is None):
        raise InputError("give MODULE, or --store (with --version V to print one version)")
    if args.store is not None:
        return _versions(args)
    if args.version is not None:
        raise InputError("--version needs --store")
    _, names = tasks_of_module(args.module)
    if not names:
        print(f"{args.module}: registers no task")
        return EXIT_OK
    width = max(len(name) for name in names)
    for name in names:
        print(f"{name:<{width}}  {describe_task(name)}".rstrip())
    return EXIT_OK


def _versions(args: Any) -> int:
    """List the versions a store keeps, or print one as JSON."""
    with open_store(args) as store:
        if args.version is not None:
            try:
                template = store.template_version(args.version)
            except (UnknownVersionError, DamagedRecordError) as exc:
                raise InputError(f"{args.store}: {exc}") from None
            print(json.dumps(template, indent=2, ensure_ascii=False))
            return EXIT_OK
        versions = store.versions()
    if not versions:
        print(f"{args.store}: no template versions")
        return EXIT_OK
    for line in table(("VERSION", "TEMPLATE"), [(v, tid or "-") for v, tid in versions.items()]):
        print(line)
    return EXIT_OK
