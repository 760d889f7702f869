"""``tukio inspect --store PATH [EXEC_ID]``: the executions journaled in a store.

With ``--prune [--before ISO] [--vacuum]`` it deletes finished executions
and gives their space back instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import time
from datetime import datetime, timezone
from typing import Any

from tukio.cli._common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, InputError, add_command
from tukio.cli._store import add_store_options, confirm, open_store, run_sync
from tukio.cli.executions import summary_rows
from tukio.errors import DamagedRecordError
from tukio.manage import MAX_LIMIT, ExecutionSummary, Manager
from tukio.report_json import dumps_report
from tukio.store._flowsql import FlowStore, QueueRow
from tukio.store.base import QUEUED, Store
from tukio.store.sqlite import SQLiteStore
from tukio.utils import FutureState

__all__ = ["add_parser", "run"]

# The states an execution can be in; 'pending' until it ends ('queued' while it waits in a shared store's queue).
_STATES = (*(state.value for state in FutureState if state is not FutureState.skipped), QUEUED)


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
            EXIT_FAILED: "the --prune confirmation was not given",
            EXIT_BAD_INPUT: "bad input: missing or unreadable store, unknown EXEC_ID or --state, bad --before, "
            "--prune without a terminal to confirm on (pass --yes)",
        },
    )
    add_store_options(parser)
    parser.add_argument("exec_id", nargs="?", metavar="EXEC_ID", help="the execution whose report to print")
    parser.add_argument(
        "--state",
        choices=_STATES,
        help="list only executions in this state (pending: unfinished; queued: waiting in the queue of flow "
        "control, with their position; exception and timeout: also those with a task that ended so)",
    )
    parser.add_argument("--json", action="store_true", help="print the listing as JSON")
    parser.add_argument("--template", metavar="ID", help="list (or prune) only executions of this template")
    parser.add_argument("--prune", action="store_true", help="delete the finished executions, print what was done")
    parser.add_argument(
        "--before", metavar="ISO", help="with --prune: only those that ended before this ISO 8601 time (UTC if naive)"
    )
    parser.add_argument("--vacuum", action="store_true", help="rebuild the database file at its smallest size")
    parser.add_argument("-n", "--dry-run", action="store_true", help="with --prune: say how many, delete nothing")
    parser.add_argument("-y", "--yes", action="store_true", help="with --prune: do not ask for a confirmation")
    parser.set_defaults(command=run)


def run(args: Any) -> int:
    """Print the executions of the store (or one report), or prune it.

    Raises:
        InputError: the store is missing or unreadable, or EXEC_ID is unknown.
    """
    before = _maintenance_options(args)
    with open_store(args) as store:
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
        items = run_sync(_everything(store, args))
        damaged = [i for i in store.executions(state=args.state, template_id=args.template) if i.problem is not None]
        queue = _queue(store, args) if any(i.state == QUEUED for i in items) else []
    if args.json:
        listed = [i.as_dict() for i in items]
        positions = {row.exec_id: place for row, place in queue}
        for item in listed:
            if item["state"] == QUEUED:
                item["position"] = positions.get(item["id"])
        print(json.dumps(listed, indent=2))
        return EXIT_OK
    if not items:
        print(f"{args.store}: no executions")
        return EXIT_OK
    for line in summary_rows(items):
        print(line)
    for line in _queue_lines(queue):
        print(line)
    for info in damaged:
        print(f"damaged: {info.exec_id}: {info.problem}")
    return EXIT_OK


def _queue(store: Store, args: Any) -> list[tuple[QueueRow, int | None]]:
    """The queued executions (of --template) with their position in their template's queue.

    Position 1 starts next; None: it waits for its `not_before` (not in line yet).
    """
    if not isinstance(store, FlowStore):
        return []
    now = time.time()
    places: dict[str, int] = {}
    out: list[tuple[QueueRow, int | None]] = []
    for row in store.flow_queue(args.template):
        if row.due is not None and row.due > now:
            out.append((row, None))
        else:
            places[row.template_id] = places.get(row.template_id, 0) + 1
            out.append((row, places[row.template_id]))
    return out


def _queue_lines(queue: list[tuple[QueueRow, int | None]]) -> list[str]:
    """The queue, one line per queued execution: position, id, priority, key value, due time, node."""
    if not queue:
        return []
    lines = ["", "queued (position in its template's queue; 1 starts next):"]
    for row, place in queue:
        where = f"{place:>5}" if place is not None else "  due"
        extra = [f"priority {row.priority}"]
        if row.part:
            extra.append(f"key {row.part}")
        if row.due is not None:
            extra.append(f"not before {datetime.fromtimestamp(row.due, timezone.utc).isoformat(timespec='seconds')}")
        lines.append(f"{where}  {row.exec_id}  {row.template_id}  {', '.join(extra)}  node {row.owner or '-'}")
    return lines


async def _everything(store: Store, args: Any) -> list[ExecutionSummary]:
    """Every execution of --state and --template, oldest first."""
    manager = Manager(store)
    items: list[ExecutionSummary] = []
    cursor = None
    while True:
        page = await manager.list(state=args.state, template=args.template, limit=MAX_LIMIT, after=cursor)
        items += page.items
        cursor = page.next
        if cursor is None:
            return items[::-1]


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
            which = "" if args.template is None else f" of template {args.template}"
            when = "" if before is None else f" that ended before {before.isoformat()}"
            doomed = _prunable(store, before, args.template)
            if args.dry_run:
                print(f"{args.store}: would prune {len(doomed)} finished execution(s){which}{when}")
                return EXIT_OK
            if doomed and not confirm(f"prune {len(doomed)} finished execution(s){which}{when}?", args.yes):
                print("aborted: nothing pruned")
                return EXIT_FAILED
            count = store.prune(before=before, template_id=args.template)
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


def _prunable(store: Store, before: datetime | None, template: str | None) -> list[str]:
    """The executions `Store.prune` would delete (for the confirmation and --dry-run)."""
    return [
        i.exec_id
        for i in store.executions(template_id=template)
        if i.finished and (before is None or (i.end is not None and i.end < before))
    ]


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
