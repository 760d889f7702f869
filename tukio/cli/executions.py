"""``tukio executions list|show|cancel|retry|resume|delete --store S``: manage journaled executions.

A thin layer over `tukio.manage.Manager`: reading needs only the store, and
actions write to the journal, where the engines sharing it act on them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from tukio.cli._common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, InputError, add_command, table
from tukio.cli._store import add_store_options, confirm, open_store, parse_iso, run_sync
from tukio.errors import DamagedRecordError
from tukio.manage import MAX_LIMIT, STATES, ExecutionDetail, ExecutionSummary, Manager, UnknownExecution

__all__ = ["add_parser", "run_action", "run_list", "run_show"]

#: Each action: its verb, past participle, and whether it makes work an engine must pick up.
_ACTIONS = {
    "cancel": ("cancel", "cancelled", False),
    "retry": ("retry", "retried", True),
    "resume": ("resume", "resumed", True),
    "delete": ("delete", "deleted", False),
}
_FILTER_NAMES = ("state", "failed", "template", "version", "node", "since", "until")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``executions`` command and its actions."""
    parser = add_command(
        subparsers,
        "executions",
        "list, show, cancel, retry, resume or delete the executions of a store",
        (
            "Manage the executions journaled in a store (an SQLite file or a postgresql:// URL) from any "
            "process: list them with filters, show one with its tasks, cancel running ones (their node acts "
            "on the request: at once on PostgreSQL, at its next heartbeat on SQLite; one whose node is dead "
            "is marked cancelled), resume failed or cancelled ones, retry one as a new execution (from a "
            "task: the tasks before it keep their outputs), delete ended ones. Resumed and retried "
            "executions are run by an engine that has their template loaded (a running node, or "
            "'tukio recover'). Actions take EXEC_IDs or filters, ask for a confirmation (--yes skips it) "
            "and show what they would do with --dry-run."
        ),
        {
            EXIT_OK: "success",
            EXIT_FAILED: "an action was refused for some execution, or the confirmation was not given",
            EXIT_BAD_INPUT: "bad input: missing store, unknown EXEC_ID, bad filter, no terminal to confirm on",
        },
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list executions, newest first", description="List executions.")
    add_store_options(listing)
    _add_filters(listing)
    listing.add_argument("--limit", type=int, default=50, help=f"executions per page (1 to {MAX_LIMIT}, default 50)")
    listing.add_argument("--after", metavar="CURSOR", help="the page after this cursor (printed below a full page)")
    listing.add_argument("--json", action="store_true", help="print the page as JSON")
    listing.set_defaults(command=run_list)
    show = actions.add_parser("show", help="show one execution with its tasks", description="Show one execution.")
    add_store_options(show)
    show.add_argument("exec_id", metavar="EXEC_ID")
    show.add_argument("--json", action="store_true", help="print the execution as JSON")
    show.set_defaults(command=run_show)
    for name, (verb, _, _) in _ACTIONS.items():
        action = actions.add_parser(name, help=f"{verb} executions", description=f"{verb.capitalize()} executions.")
        add_store_options(action)
        action.add_argument("ids", nargs="*", metavar="EXEC_ID", help="the executions (or select them by filters)")
        _add_filters(action)
        action.add_argument("--all", action="store_true", help="every execution the action applies to")
        action.add_argument("-n", "--dry-run", action="store_true", help="print what would be done, do nothing")
        action.add_argument("-y", "--yes", action="store_true", help="do not ask for a confirmation")
        if name == "retry":
            action.add_argument("--from-task", metavar="TASK_ID", help="run this task and those after it again")
        action.set_defaults(command=run_action, action=name)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        action="append",
        choices=STATES,
        help="only executions in this state (repeatable; exception and timeout include those with such a task)",
    )
    failed = parser.add_mutually_exclusive_group()
    failed.add_argument("--failed", action="store_const", const=True, help="only those with a failed task")
    failed.add_argument("--not-failed", dest="failed", action="store_const", const=False, help="only the others")
    parser.add_argument("--template", metavar="ID", help="only executions of this template")
    parser.add_argument("--version", metavar="V", help="only executions of this template version")
    parser.add_argument("--node", metavar="NAME", help="only executions owned by this node")
    parser.add_argument("--since", metavar="ISO", help="only those started at or after this time (UTC if naive)")
    parser.add_argument("--until", metavar="ISO", help="only those started before this time (UTC if naive)")


def filters_of(args: Any) -> dict[str, Any]:
    """The filters given on the command line, as `Manager.list` takes them.

    Raises:
        InputError: a time that is not ISO 8601.
    """
    found = {name: getattr(args, name) for name in _FILTER_NAMES if getattr(args, name) is not None}
    for name in ("since", "until"):
        if name in found:
            found[name] = parse_iso(f"--{name}", found[name])
    return found


def _managed(args: Any, work: Callable[[Manager], Coroutine[Any, Any, int]]) -> int:
    """Open the store, run `work` with a manager of it; bad values become input errors.

    Raises:
        InputError: the store cannot be opened, an unknown id, a bad filter or value.
    """
    with open_store(args) as store:
        try:
            return run_sync(work(Manager(store)))
        except UnknownExecution as exc:
            raise InputError(f"{args.store}: {exc}") from None
        except (ValueError, DamagedRecordError) as exc:
            raise InputError(str(exc)) from None


def _time(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[-1] if (text or "").strip() else ""


def summary_rows(items: list[ExecutionSummary]) -> list[str]:
    """The table of a listing: one line per execution."""
    rows = [
        (
            i.id,
            i.state,
            i.template or "-",
            i.version or "-",
            i.node or "-",
            _time(i.start),
            _time(i.end),
            _first_line(i.error),
        )
        for i in items
    ]
    return table(("EXEC_ID", "STATE", "TEMPLATE", "VERSION", "NODE", "START", "END", "ERROR"), rows)


def run_list(args: Any) -> int:
    """``executions list``: one page of executions, newest first."""
    filters = filters_of(args)

    async def work(manager: Manager) -> int:
        page = await manager.list(**filters, limit=args.limit, after=args.after)
        if args.json:
            print(json.dumps(page.as_dict(), indent=2))
        elif not page.items:
            print(f"{args.store}: no executions")
        else:
            for line in summary_rows(page.items):
                print(line)
            if page.next is not None:
                print(f"more: --after {page.next}")
        return EXIT_OK

    return _managed(args, work)


def _show_text(detail: ExecutionDetail) -> list[str]:
    failed = " (failed)" if detail.failed and detail.state not in ("exception", "timeout") else ""
    lines = [
        f"execution {detail.id}",
        f"  template  {detail.template or '-'}" + (f" (version {detail.version})" if detail.version else ""),
        f"  state     {detail.state}{failed}",
        f"  node      {detail.node or '-'}",
        f"  start     {_time(detail.start)}",
        f"  end       {_time(detail.end)}",
    ]
    if detail.error:
        lines.append(f"  error     {_first_line(detail.error)}")
    rows = [
        (t.id, t.name, t.state or "-", str(t.attempts), _time(t.start), _time(t.end), _first_line(t.error))
        for t in detail.tasks
    ]
    return [*lines, "", *table(("TASK", "NAME", "STATE", "ATTEMPTS", "START", "END", "ERROR"), rows)]


def run_show(args: Any) -> int:
    """``executions show EXEC_ID``: one execution with its tasks."""

    async def work(manager: Manager) -> int:
        detail = await manager.get(args.exec_id)
        if args.json:
            print(json.dumps(detail.as_dict(), indent=2, default=repr))
        else:
            for line in _show_text(detail):
                print(line)
        return EXIT_OK

    return _managed(args, work)


def run_action(args: Any) -> int:
    """``executions cancel|retry|resume|delete``: by EXEC_IDs or by filters, confirmed first."""
    verb, done, picked_up = _ACTIONS[args.action]
    filters = filters_of(args)
    if args.ids and (filters or args.all):
        raise InputError("give EXEC_IDs or filters (or --all), not both")
    if not args.ids and not filters and not args.all:
        raise InputError(f"which executions? give EXEC_IDs, filters, or --all to {verb} every one it applies to")

    async def work(manager: Manager) -> int:
        if args.ids:
            for exec_id in args.ids:
                await manager.get(exec_id)  # an unknown id is bad input, before anything is done
            targets = list(args.ids)
        else:
            select = getattr(manager, f"{args.action}_many")
            targets = await select(dry_run=True, **filters)
        if args.dry_run or not targets:
            for exec_id in targets:
                print(f"would {verb} {exec_id}")
            if not targets:
                print(f"nothing to {verb}")
            return EXIT_OK
        if not confirm(f"{verb} {len(targets)} execution(s) in {args.store}?", args.yes):
            print("aborted: nothing done")
            return EXIT_FAILED
        return await _apply(manager, args, targets, done, picked_up)

    return _managed(args, work)


async def _apply(manager: Manager, args: Any, targets: list[str], done: str, picked_up: bool) -> int:
    """Apply the action to each of `targets`, printing a line each; 1 when some were refused."""
    code = EXIT_OK
    for exec_id in targets:
        try:
            if args.action == "cancel":
                print(f"{exec_id}: {await manager.cancel(exec_id)}")
            elif args.action == "retry":
                print(f"{exec_id}: retried as {await manager.retry(exec_id, from_task=args.from_task)}")
            else:
                await getattr(manager, args.action)(exec_id)
                print(f"{exec_id}: {done}")
        except (ValueError, UnknownExecution) as exc:
            print(f"tukio: {exec_id}: {exc}", file=sys.stderr)
            code = EXIT_FAILED
    if picked_up:
        print("an engine with the template loaded runs it (a live node at its next heartbeat, or 'tukio recover')")
    return code
