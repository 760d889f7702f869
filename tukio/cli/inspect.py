"""``tukio inspect --store PATH [EXEC_ID]``: the executions journaled in a store."""

from __future__ import annotations

import argparse
import os
import sqlite3
from datetime import datetime
from typing import Any

from tukio.cli._common import EXIT_BAD_INPUT, EXIT_OK, InputError, add_command, table
from tukio.errors import DamagedRecordError
from tukio.report_json import dumps_report
from tukio.utils import FutureState

__all__ = ["add_parser", "run"]

# The states an execution can be in; 'pending' until it ends.
_STATES = tuple(state.value for state in FutureState if state is not FutureState.skipped)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``inspect`` command."""
    parser = add_command(
        subparsers,
        "inspect",
        "list the executions journaled in a store, or print one report",
        (
            "Open the SQLite store at PATH (as written by 'tukio run --store PATH' or by "
            "Engine(store=SQLiteStore(PATH))) and list its "
            "executions with their state and template, oldest first; with EXEC_ID, print that execution's "
            "report as JSON."
        ),
        {EXIT_OK: "success", EXIT_BAD_INPUT: "bad input: missing or unreadable store, unknown EXEC_ID or --state"},
    )
    parser.add_argument("--store", required=True, metavar="PATH", help="the SQLite database of the journal")
    parser.add_argument("exec_id", nargs="?", metavar="EXEC_ID", help="the execution whose report to print")
    parser.add_argument(
        "--state",
        choices=_STATES,
        help="list only executions in this state (pending: unfinished)",
    )
    parser.add_argument("--template", metavar="ID", help="list only executions of this template")
    parser.set_defaults(command=run)


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def run(args: Any) -> int:
    """Print the executions of the store (or one report).

    Raises:
        InputError: the store is missing or unreadable, or EXEC_ID is unknown.
    """
    from tukio.store.sqlite import SQLiteStore

    if not os.path.isfile(args.store):
        raise InputError(f"{args.store}: no such store")
    try:
        store = SQLiteStore(args.store)
    except sqlite3.Error as exc:
        raise InputError(f"{args.store}: cannot open the store: {exc}") from None
    with store:
        if args.exec_id is not None:
            try:
                report = store.load(args.exec_id)
            except KeyError:
                raise InputError(f"{args.store}: no execution {args.exec_id!r}") from None
            except DamagedRecordError as exc:
                raise InputError(f"{args.store}: {exc}") from None
            print(dumps_report(report))
            return EXIT_OK
        infos = store.executions(state=args.state, template_id=args.template)
    if not infos:
        print(f"{args.store}: no executions")
        return EXIT_OK
    rows = [(i.exec_id, i.state, i.template_id or "-", _time(i.start), _time(i.end), i.error or "") for i in infos]
    for line in table(("EXEC_ID", "STATE", "TEMPLATE", "START", "END", "ERROR"), rows):
        print(line)
    for info in infos:
        if info.problem is not None:
            print(f"damaged: {info.exec_id}: {info.problem}")
    return EXIT_OK
