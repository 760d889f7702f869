"""``tukio inspect --store PATH [EXEC_ID]``: the executions journaled in a store.

With ``--prune [--before ISO] [--vacuum]`` it deletes finished executions
and gives their space back instead.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
from datetime import datetime, timezone
from typing import Any

from tukio.cli._common import EXIT_BAD_INPUT, EXIT_OK, InputError, add_command, table
from tukio.cli._stores import add_store_options, open_store
from tukio.errors import DamagedRecordError
from tukio.report_json import dumps_report
from tukio.store.base import Store
from tukio.store.sqlite import SQLiteStore
from tukio.utils import FutureState

__all__ = ["add_parser", "run"]

# The states an execution can be in; 'pending' until it ends.
_STATES = tuple(state.value for state in FutureState if state is not FutureState.skipped)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``inspect`` command."""
    parser = add_command(
        subparsers,
        "inspect",
        "list the executions journaled in a store, print one report, or prune the store",
        (
            "Open the SQLite store at PATH (as written by 'tukio run --store PATH' or by "
            "Engine(store=SQLiteStore(PATH))), or the PostgreSQL store at a postgresql:// URL, and list its "
            "executions with their state, template and template version, oldest first; with EXEC_ID, print "
            "that execution's "
            "report as JSON. With --prune, delete the finished executions instead (those of --template, "
            "those that ended before --before) and give their space back; --vacuum also rebuilds the file "
            "at its smallest (it needs as much free space again). Pruning works while an engine runs."
        ),
        {
            EXIT_OK: "success",
            EXIT_BAD_INPUT: "bad input: missing or unreadable store, unknown EXEC_ID or --state, bad --before",
        },
    )
    add_store_options(parser)
    parser.add_argument("exec_id", nargs="?", metavar="EXEC_ID", help="the execution whose report to print")
    parser.add_argument(
        "--state",
        choices=_STATES,
        help="list only executions in this state (pending: unfinished)",
    )
    parser.add_argument("--template", metavar="ID", help="list (or prune) only executions of this template")
    parser.add_argument("--prune", action="store_true", help="delete the finished executions, print what was done")
    parser.add_argument(
        "--before", metavar="ISO", help="with --prune: only those that ended before this ISO 8601 time (UTC if naive)"
    )
    parser.add_argument("--vacuum", action="store_true", help="rebuild the database file at its smallest size")
    parser.set_defaults(command=run)


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def run(args: Any) -> int:
    """Print the executions of the store (or one report).

    Raises:
        InputError: the store is missing or unreadable, or EXEC_ID is unknown.
    """
    before = _maintenance_options(args)
    with open_store(args.store, args.schema) as store:
        if args.prune or args.vacuum:
            return _maintain(store, args, before)
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
    rows = [
        (i.exec_id, i.state, i.template_id or "-", i.version or "-", _time(i.start), _time(i.end), i.error or "")
        for i in infos
    ]
    for line in table(("EXEC_ID", "STATE", "TEMPLATE", "VERSION", "START", "END", "ERROR"), rows):
        print(line)
    for info in infos:
        if info.problem is not None:
            print(f"damaged: {info.exec_id}: {info.problem}")
    return EXIT_OK


def _maintenance_options(args: Any) -> datetime | None:
    """Check the --prune options; return --before as an aware time.

    Raises:
        InputError: options that do not go together, or a time that is not ISO 8601.
    """
    for flag, on in (("--prune", args.prune), ("--vacuum", args.vacuum)):
        if on and (args.exec_id is not None or args.state is not None):
            raise InputError(f"{flag} cannot be combined with EXEC_ID or --state")
    if args.before is None:
        return None
    if not args.prune:
        raise InputError("--before needs --prune")
    try:
        before = datetime.fromisoformat(args.before)
    except ValueError:
        raise InputError(f"--before: not an ISO 8601 time: {args.before!r}") from None
    return before if before.tzinfo is not None else before.replace(tzinfo=timezone.utc)


def _maintain(store: Store, args: Any, before: datetime | None) -> int:
    """Prune and/or vacuum the store, saying what was done and the file sizes after.

    Raises:
        InputError: the database is locked by another process, or cannot be written.
    """
    try:
        if args.prune:
            count = store.prune(before=before, template_id=args.template)
            which = "" if args.template is None else f" of template {args.template}"
            when = "" if before is None else f" that ended before {before.isoformat()}"
            print(f"{args.store}: pruned {count} finished execution(s){which}{when}")
        if args.vacuum:
            if not isinstance(store, SQLiteStore):
                raise InputError("--vacuum is for SQLite stores (PostgreSQL: run VACUUM on the server)")
            store.vacuum()
            print(f"{args.store}: vacuumed")
    except sqlite3.Error as exc:
        raise InputError(f"{args.store}: cannot prune the store: {exc}") from None
    if not isinstance(store, SQLiteStore):
        return EXIT_OK
    print(f"{args.store}: database {_size(args.store)}, write-ahead log {_size(args.store + '-wal')}")
    return EXIT_OK


def _size(path: str) -> str:
    try:
        size = float(os.path.getsize(path))
    except OSError:
        size = 0.0
    for unit in ("bytes", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
