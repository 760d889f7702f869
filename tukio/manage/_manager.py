"""`Manager`: list, inspect, cancel, resume, retry and delete executions, from any process."""

from __future__ import annotations

import asyncio
import builtins
import functools
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from tukio._report import parse_time
from tukio.manage import _rows
from tukio.manage._model import (
    ExecutionDetail,
    NodeInfo,
    Page,
    TaskDetail,
    UnknownExecution,
    decode_cursor,
    encode_cursor,
)
from tukio.manage._rows import MAX_LIMIT, STATES
from tukio.store._admin import Admin, Row
from tukio.store.base import LOST_EVENT, UNFINISHED, Store
from tukio.utils import new_uid

if TYPE_CHECKING:
    from tukio.engine import Engine

__all__ = ["MAX_LIMIT", "STATES", "Manager"]

_T = TypeVar("_T")


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
            state: keep only executions in this state (or these states);
                'exception' and 'timeout' also keep the executions with a
                task that ended so (their workflow may have 'finished').
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
        filters = _rows.filters(state, failed, template, version, node, since, until)
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
        key = decode_cursor(after) if after is not None else None
        rows = await self._call(self._admin.page, filters, limit + 1, key)
        items = [_rows.summary(r) for r in rows[:limit]]
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
        summary = _rows.summary(row)
        return ExecutionDetail(**vars(summary), tasks=tasks, graph=_rows.graph(report))

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

    # -- actions ---------------------------------------------------------------------------
    async def cancel(self, exec_id: str) -> str:
        """Cancel an unfinished execution, wherever it runs.

        An execution running in this process's `engine` is cancelled in
        place. One whose owner is alive gets a cancel request: the owner
        cancels it at once on PostgreSQL, at its next heartbeat on SQLite. One
        with no live owner (its node died, a ``tukio run`` killed mid-way) is
        marked cancelled in the journal.

        Returns:
            "cancelled" (done), "requested" (its owner will), or the state
            the execution had already ended in (nothing done).

        Raises:
            UnknownExecution: no execution has that id.
        """
        await self._row(exec_id)
        running = self._running(exec_id)
        if running is not None:
            running.cancel()
            return "cancelled"
        return await self._call(self._admin.cancel, exec_id)

    def _running(self, exec_id: str) -> Any:
        """The unfinished workflow `exec_id` of this process's engine, or None."""
        if self.engine is None:
            return None
        for workflow in self.engine.instances:
            if workflow.uid == exec_id and not workflow.done():
                return workflow
        return None

    async def resume(self, exec_id: str) -> None:
        """Run a failed, timed-out or cancelled execution again from where it stopped, under its id.

        Its tasks that finished keep their outputs; those that failed, timed
        out, were cancelled or never ended run again (and what follows them).
        The execution becomes unfinished and owned by no node: an engine with
        its template loaded resumes it (a node at its next heartbeat, any
        engine at `Engine.recover()`; the `engine` given here at once).

        Raises:
            UnknownExecution: no execution has that id.
            ValueError: the execution is unfinished, or finished without a failure.
        """
        row = await self._row(exec_id)
        if not _rows.eligible("resume", row):
            why = "is unfinished" if row.state == UNFINISHED else "finished without a failure"
            raise ValueError(f"execution {exec_id!r} {why}: nothing to resume")
        report = await self._call(self.store.load, exec_id)
        rerun = [
            str(t.get("id"))
            for t in report.get("tasks", [])
            if t.get("exec") and t["exec"].get("state") not in _rows.DONE
        ]
        if not await self._call(self._admin.resume, exec_id, rerun):
            raise ValueError(f"execution {exec_id!r} is unfinished: nothing to resume")
        await self._recover()

    async def retry(self, exec_id: str, *, from_task: str | None = None) -> str:
        """Run an execution again as a new one, from one of its tasks (from the start when None).

        The new execution has the same template and trigger; the tasks
        before `from_task` (those not after it in the graph) that finished
        keep their outputs and do not run again; `from_task` and every task
        after it run again. The old execution is left as it is. Like a
        resumed one, an engine with the template loaded runs it.

        Returns:
            The new execution's id.

        Raises:
            UnknownExecution: no execution has that id.
            ValueError: the execution is unfinished, `from_task` is not one
                of its tasks, or a task before it has no outputs to reuse.
        """
        row = await self._row(exec_id)
        if not _rows.eligible("retry", row):
            raise ValueError(f"execution {exec_id!r} is unfinished: cancel it before retrying it")
        report = await self._call(self.store.load, exec_id)
        graph = _rows.graph(report)
        keep: builtins.list[str] = []
        if from_task is not None:
            if from_task not in graph:
                raise ValueError(f"execution {exec_id!r} has no task {from_task!r}: its tasks are {', '.join(graph)}")
            states = {str(t.get("id")): (t.get("exec") or {}).get("state") for t in report.get("tasks", [])}
            again = _rows.downstream(graph, from_task)
            for parent in (p for p, succ in graph.items() if from_task in succ):
                if states.get(parent) not in _rows.DONE:
                    raise ValueError(
                        f"task {parent!r} before {from_task!r} did not finish (state {states.get(parent)}): "
                        "retry from it instead"
                    )
            keep = [t for t, state in states.items() if t not in again and state in _rows.DONE]
        new_id = new_uid()
        await self._call(self._admin.fork, exec_id, new_id, keep)
        await self._recover()
        return new_id

    async def delete(self, exec_id: str) -> None:
        """Delete an ended execution from the store, with its tasks and their events.

        Raises:
            UnknownExecution: no execution has that id.
            ValueError: the execution is unfinished (cancel it first).
        """
        row = await self._row(exec_id)
        if not _rows.eligible("delete", row):
            raise ValueError(f"execution {exec_id!r} is unfinished: cancel it before deleting it")
        await self._call(self._admin.delete, [exec_id])

    async def _recover(self) -> None:
        """Have this process's engine, if any, pick up what an action made unfinished."""
        if self.engine is not None and self.engine.store is self.store:
            await self.engine.recover()

    # -- bulk ------------------------------------------------------------------------------
    async def _select(self, action: str, filters: dict[str, Any]) -> builtins.list[str]:
        """The ids of the executions `filters` select that `action` applies to, newest first.

        Raises:
            ValueError: an unknown filter or filter value.
        """
        unknown = sorted(set(filters) - _rows.FILTERS)
        if unknown:
            raise ValueError(f"unknown filter {unknown[0]!r}: expected some of {', '.join(sorted(_rows.FILTERS))}")
        checked = _rows.filters(**{name: filters.get(name) for name in sorted(_rows.FILTERS)})
        rows = await self._call(self._admin.matching, checked)
        return [r.exec_id for r in rows if _rows.eligible(action, r)]

    async def _each(
        self, action: str, filters: dict[str, Any], dry_run: bool, act: Callable[[str], Awaitable[object]]
    ) -> builtins.list[str]:
        """Select what `action` applies to, then (unless `dry_run`) `act` on each id in turn; return the ids."""
        ids = await self._select(action, filters)
        if not dry_run:
            for exec_id in ids:
                await act(exec_id)
        return ids

    async def cancel_many(self, *, dry_run: bool = False, **filters: Any) -> builtins.list[str]:
        """Cancel every unfinished execution `filters` select (those of `list`), as `cancel` does.

        Returns:
            The ids of the executions cancelled or asked to (with `dry_run`: that would be).

        Raises:
            ValueError: an unknown filter or filter value.
        """
        return await self._each("cancel", filters, dry_run, self.cancel)

    async def resume_many(self, *, dry_run: bool = False, **filters: Any) -> builtins.list[str]:
        """Resume every failed or cancelled execution `filters` select, as `resume` does.

        Returns:
            The ids of the executions resumed (with `dry_run`: that would be).

        Raises:
            ValueError: an unknown filter or filter value.
        """
        return await self._each("resume", filters, dry_run, self.resume)

    async def retry_many(
        self, *, dry_run: bool = False, from_task: str | None = None, **filters: Any
    ) -> builtins.list[str]:
        """Retry every ended execution `filters` select, as `retry` does.

        Returns:
            The ids of the executions retried (with `dry_run`: that would be),
            not those of the new executions.

        Raises:
            ValueError: an unknown filter or filter value, or `from_task`
                does not apply to one of them (those before were retried).
        """
        return await self._each("retry", filters, dry_run, functools.partial(self.retry, from_task=from_task))

    async def delete_many(self, *, dry_run: bool = False, **filters: Any) -> builtins.list[str]:
        """Delete every ended execution `filters` select (unfinished ones are left alone).

        Returns:
            The ids of the executions deleted (with `dry_run`: that would be).

        Raises:
            ValueError: an unknown filter or filter value.
        """
        ids = await self._select("delete", filters)
        if not dry_run:
            await self._call(self._admin.delete, ids)
        return ids
