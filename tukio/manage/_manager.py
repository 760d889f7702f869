"""`Manager`: list, inspect, cancel, resume, retry and delete executions, from any process."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from tukio._report import iso, parse_time
from tukio.manage._model import (
    ExecutionDetail,
    ExecutionSummary,
    NodeInfo,
    Page,
    TaskDetail,
    UnknownExecution,
    decode_cursor,
    encode_cursor,
)
from tukio.store._admin import FAILED_STATES, Admin, Filters, Row
from tukio.store.base import LOST_EVENT, UNFINISHED, Store
from tukio.utils import FutureState

if TYPE_CHECKING:
    from tukio.engine import Engine

__all__ = ["MAX_LIMIT", "STATES", "Manager"]

_T = TypeVar("_T")

#: The states an execution can be in (the `state` filter accepts these).
STATES = tuple(s.value for s in FutureState)
#: The largest page a listing returns.
MAX_LIMIT = 1000
# Task states whose outputs a retry or a resume keeps.
_DONE = frozenset({"finished", "skipped"})


def _eligible(action: str, row: Row) -> bool:
    """Whether `action` applies to the execution `row` (what a bulk action selects)."""
    if action == "cancel":
        return row.state == UNFINISHED
    if action == "resume":
        return row.state != UNFINISHED and (row.state != "finished" or _failed(row))
    return row.state != UNFINISHED  # retry, delete


def _failed(row: Row) -> bool:
    return row.state in FAILED_STATES or row.task_error is not None


def _summary(row: Row) -> ExecutionSummary:
    return ExecutionSummary(
        id=row.exec_id,
        template=row.template_id,
        version=row.version,
        state=row.state,
        failed=_failed(row),
        node=row.owner,
        start=parse_time(row.start),
        end=parse_time(row.end),
        error=row.error if row.error is not None else (f"task {row.task_error}" if row.task_error else None),
    )


def _graph(report: dict[str, Any]) -> dict[str, list[str]]:
    """Task id -> successor ids, from the template in `report` (every task listed)."""
    graph: dict[str, list[str]] = {str(t.get("id")): [] for t in report.get("tasks", [])}
    for task_id, successors in (report.get("graph") or {}).items():
        graph[str(task_id)] = [successors] if isinstance(successors, str) else [str(s) for s in successors]
    return graph


def _downstream(graph: dict[str, list[str]], task_id: str) -> set[str]:
    """`task_id` and every task after it."""
    seen = {task_id}
    todo = [task_id]
    while todo:
        for succ in graph.get(todo.pop(), []):
            if succ not in seen:
                seen.add(succ)
                todo.append(succ)
    return seen


def _filters(
    state: str | Iterable[str] | None,
    failed: bool | None,
    template: str | None,
    version: str | None,
    node: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Filters:
    """Check the filters of a listing or a bulk action.

    Raises:
        ValueError: an unknown state, or a time that is not a datetime.
    """
    states = None
    if state is not None:
        states = (state,) if isinstance(state, str) else tuple(state)
        unknown = [s for s in states if s not in STATES]
        if unknown:
            raise ValueError(f"unknown state {unknown[0]!r}: expected one of {', '.join(STATES)}")
    for name, value in (("since", since), ("until", until)):
        if value is not None and not isinstance(value, datetime):
            raise ValueError(f"{name} must be a datetime, got {value!r}")
    return Filters(states, failed, template, version, node, iso(since), iso(until))


class Manager:
    """Lists, inspects and steers the executions of a store, from any process.

    Reading needs only the store. Actions write to the journal, and the
    engines sharing the store act on what they find there: a cancel request
    reaches the execution's owner (at once on PostgreSQL, at its next
    heartbeat on SQLite); a resumed or retried execution is unfinished and
    owned by no node, and the next engine that has its template loaded takes
    it over at a heartbeat (or at its `Engine.recover()`).

    Args:
        store: the store to manage (`MemoryStore`, `SQLiteStore`,
            `PostgresStore`, or any store whose `Store.admin` is not None).
        engine: an engine running in this process on the same store: it is
            told of the actions at once (a cancelled workflow of it is
            cancelled in place, a resumed or retried execution recovered).
            With a `MemoryStore`, that is the only engine that can act.

    Raises:
        TypeError: the store offers no management (`Store.admin` is None).
    """

    def __init__(self, store: Store, *, engine: Engine | None = None) -> None:
        admin = store.admin()
        if admin is None:
            raise TypeError(f"{store!r} cannot be managed: its admin() is None")
        self.store = store
        self.engine = engine
        self._admin: Admin = admin

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Call a store function without blocking the loop (in a thread unless the store never blocks)."""
        if self.store.blocking:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def _row(self, exec_id: str) -> Row:
        row = await self._call(self._admin.row, exec_id)
        if row is None:
            raise UnknownExecution(exec_id)
        return row

    # -- reading ---------------------------------------------------------------------------
    async def list(
        self,
        *,
        state: str | Iterable[str] | None = None,
        failed: bool | None = None,
        template: str | None = None,
        version: str | None = None,
        node: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> Page:
        """List executions, newest first (by start time, then id), one page at a time.

        Args:
            state: keep only executions in this state (or these states).
            failed: keep only those with (True) or without (False) a failed task.
            template: keep only executions of this template id.
            version: keep only executions of this template version.
            node: keep only executions owned by this node.
            since: keep only executions started at or after this time.
            until: keep only executions started before this time.
            limit: the page's size (1 to `MAX_LIMIT`).
            after: the `Page.next` cursor of the page before.

        Returns:
            The page, with the cursor of the next one.

        Raises:
            ValueError: an unknown state, a bad limit, time or cursor.
        """
        filters = _filters(state, failed, template, version, node, since, until)
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
        key = decode_cursor(after) if after is not None else None
        rows = await self._call(self._admin.page, filters, limit + 1, key)
        items = [_summary(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(items, encode_cursor(rows[limit - 1].start or "", rows[limit - 1].exec_id) if more else None)

    async def get(self, exec_id: str) -> ExecutionDetail:
        """One execution with its tasks.

        Raises:
            UnknownExecution: no execution has that id.
            DamagedRecordError: a record of it cannot be read back.
        """
        row = await self._row(exec_id)
        try:
            report = await self._call(self.store.load, exec_id)
        except KeyError:  # deleted meanwhile
            raise UnknownExecution(exec_id) from None
        events = await self._call(self.store.task_events, exec_id) if self.store.keeps_events else {}
        tasks = []
        for task in report.get("tasks", []):
            entry = task.get("exec") or {}
            task_id = str(task.get("id"))
            received = [None if p is LOST_EVENT else p[0] for _, p in events.get(task_id, [])]
            tasks.append(
                TaskDetail(
                    id=task_id,
                    name=str(task.get("name")),
                    state=entry.get("state"),
                    start=parse_time(entry.get("start")),
                    end=parse_time(entry.get("end")),
                    inputs=entry.get("inputs"),
                    outputs=entry.get("outputs"),
                    error=entry.get("error"),
                    attempts=len(entry.get("attempts") or []) + 1 if entry else 0,
                    events=received,
                    node=row.owner,
                )
            )
        summary = _summary(row)
        return ExecutionDetail(**vars(summary), tasks=tasks, graph=_graph(report))

    async def nodes(self) -> builtins.list[NodeInfo]:
        """The nodes sharing the store, by name (an empty list for a store of one process)."""
        rows = await self._call(self._admin.nodes)
        return [
            NodeInfo(
                name=r.name,
                alive=r.alive,
                epoch=r.epoch,
                lease_expires=datetime.fromtimestamp(r.expires, timezone.utc) if r.expires is not None else None,
                owned=r.owned,
            )
            for r in rows
        ]
