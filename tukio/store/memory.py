"""`MemoryStore`: a journal kept in memory (tests, and services that only want reports)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from tukio.store._admin import FAILED_STATES, Admin, Filters, NodeRow, Row, now
from tukio.store.base import (
    UNFINISHED,
    ExecutionInfo,
    ExecutionRecord,
    Record,
    Serializer,
    Store,
    TaskEventRecord,
    TaskRecord,
    build_report,
    execution_info,
    iso,
    parse_states,
    task_events,
)

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Keeps executions in dicts; nothing survives the process.

    Data still goes through the serializer, so what a `MemoryStore` accepts
    a disk store accepts too, and reports come back the same.

    Args:
        serializer: encodes data (`JSONSerializer` when None).
    """

    blocking = False
    keeps_events = True

    def __init__(self, serializer: Serializer | None = None) -> None:
        super().__init__(serializer)
        self._lock = threading.Lock()
        self._executions: dict[str, ExecutionRecord] = {}
        self._tasks: dict[str, dict[str, TaskRecord]] = {}
        # The events of each execution's tasks: exec id -> (task id, seq) -> record.
        self._events: dict[str, dict[tuple[str, int], TaskEventRecord]] = {}

    def write(self, records: Sequence[Record]) -> None:
        """Apply `records` in order (see `Store.write`)."""
        with self._lock:
            for record in records:
                if isinstance(record, TaskRecord):
                    self._tasks.setdefault(record.exec_id, {})[record.task_id] = record
                    continue
                if isinstance(record, TaskEventRecord):
                    self._event(record)
                    continue
                old = self._executions.get(record.exec_id)
                if old is not None:
                    record = record._replace(
                        template_id=record.template_id if record.template_id is not None else old.template_id,
                        start=record.start if record.start is not None else old.start,
                        template=record.template if record.template is not None else old.template,
                        event=record.event if record.event is not None else old.event,
                    )
                self._executions[record.exec_id] = record

    def _event(self, record: TaskEventRecord) -> None:
        events = self._events.setdefault(record.exec_id, {})
        if record.data is not None or record.error is not None:
            events[record.task_id, record.seq] = record
            return
        for key in [k for k in events if k[0] == record.task_id and k[1] < record.seq]:  # a new attempt
            del events[key]

    def task_events(self, exec_id: str) -> dict[str, list[tuple[int, Any]]]:
        """The events journaled for the tasks of an execution (see `Store.task_events`)."""
        with self._lock:
            rows = [(r.task_id, r.seq, r.data, r.error) for r in self._events.get(exec_id, {}).values()]
        return task_events(self.serializer, exec_id, rows)

    def executions(
        self, *, state: str | Iterable[str] | None = None, template_id: str | None = None
    ) -> list[ExecutionInfo]:
        """List executions, oldest first (see `Store.executions`)."""
        states = parse_states(state)
        with self._lock:
            rows = list(self._executions.values())
        return [
            execution_info(r.exec_id, r.template_id, r.state, r.start, r.end, r.error)
            for r in sorted(rows, key=lambda r: str(r.start or ""))
            if (states is None or r.state in states) and (template_id is None or r.template_id == template_id)
        ]

    def load(self, exec_id: str) -> dict[str, Any]:
        """Return the report of one execution (see `Store.load`).

        Raises:
            KeyError: no execution has that id.
            DamagedRecordError: a record of it cannot be read back.
        """
        with self._lock:
            execution = self._executions.get(exec_id)
            if execution is None:
                raise KeyError(f"no execution {exec_id!r} in the store")
            tasks = list(self._tasks.get(exec_id, {}).values())
        return build_report(self.serializer, execution, tasks)

    def prune(self, *, before: datetime | None = None, template_id: str | None = None) -> int:
        """Delete finished executions (see `Store.prune`)."""
        limit = iso(before)
        with self._lock:
            doomed = [
                r.exec_id
                for r in self._executions.values()
                if r.state != UNFINISHED
                and (template_id is None or r.template_id == template_id)
                and (limit is None or (r.end is not None and r.end < limit))
            ]
            for exec_id in doomed:
                del self._executions[exec_id]
                self._tasks.pop(exec_id, None)
                self._events.pop(exec_id, None)
        return len(doomed)

    def admin(self) -> Admin:
        """The queries and actions of `tukio.manage` on this store."""
        return _MemoryAdmin(self._lock, self._executions, self._tasks, self._events)


class _MemoryAdmin(Admin):
    """`Admin` over a `MemoryStore`'s dicts (given by the store, with the lock that guards them)."""

    def __init__(
        self,
        lock: threading.Lock,
        executions: dict[str, ExecutionRecord],
        tasks: dict[str, dict[str, TaskRecord]],
        events: dict[str, dict[tuple[str, int], TaskEventRecord]],
    ) -> None:
        self._lock = lock
        self._executions = executions
        self._tasks = tasks
        self._events = events

    def _row(self, r: ExecutionRecord) -> Row:
        failed = sorted(
            (t for t in self._tasks.get(r.exec_id, {}).values() if t.state in FAILED_STATES),
            key=lambda t: t.end or "",
        )
        task_error = f"{failed[0].task_id}: {failed[0].error or failed[0].state}" if failed else None
        return Row(r.exec_id, r.template_id, None, r.state, None, r.start, r.end, r.error, task_error)

    def _rows(self, filters: Filters) -> list[Row]:
        """Every execution `filters` selects, newest first (under the lock)."""
        rows = [self._row(r) for r in self._executions.values()]
        rows.sort(key=lambda r: (r.start or "", r.exec_id), reverse=True)
        return [r for r in rows if _selected(r, self._task_states(r.exec_id), filters)]

    def _task_states(self, exec_id: str) -> set[str]:
        return {t.state for t in self._tasks.get(exec_id, {}).values()}

    def page(self, filters: Filters, limit: int, after: tuple[str, str] | None) -> list[Row]:
        """Up to `limit` executions, newest first, after the key `after` (see `Admin.page`)."""
        with self._lock:
            rows = self._rows(filters)
        if after is not None:
            rows = [r for r in rows if (r.start or "", r.exec_id) < after]
        return rows[:limit]

    def matching(self, filters: Filters) -> list[Row]:
        """Every execution `filters` selects, newest first."""
        with self._lock:
            return self._rows(filters)

    def row(self, exec_id: str) -> Row | None:
        """One execution, or None."""
        with self._lock:
            found = self._executions.get(exec_id)
            return self._row(found) if found is not None else None

    def nodes(self) -> list[NodeRow]:
        """None: a memory store belongs to one process."""
        return []

    def cancel(self, exec_id: str) -> str:
        """Mark an unfinished execution cancelled (see `Admin.cancel`)."""
        with self._lock:
            found = self._executions.get(exec_id)
            if found is None or found.state != UNFINISHED:
                return found.state if found is not None else "missing"
            self._executions[exec_id] = found._replace(state="cancelled", end=now())
        return "cancelled"

    def resume(self, exec_id: str, rerun: Sequence[str]) -> bool:
        """Make an ended execution unfinished again, forgetting tasks `rerun` (see `Admin.resume`)."""
        with self._lock:
            found = self._executions.get(exec_id)
            if found is None or found.state == UNFINISHED:
                return False
            self._executions[exec_id] = found._replace(state=UNFINISHED, end=None, error=None)
            tasks = self._tasks.get(exec_id, {})
            events = self._events.get(exec_id, {})
            for task_id in rerun:
                tasks.pop(task_id, None)
                for key in [k for k in events if k[0] == task_id]:
                    del events[key]
        return True

    def fork(self, exec_id: str, new_id: str, keep: Sequence[str]) -> None:
        """Write the new execution `new_id` from `exec_id` (see `Admin.fork`)."""
        with self._lock:
            old = self._executions[exec_id]
            self._executions[new_id] = old._replace(exec_id=new_id, state=UNFINISHED, start=now(), end=None, error=None)
            tasks = self._tasks.get(exec_id, {})
            self._tasks[new_id] = {k: tasks[k]._replace(exec_id=new_id) for k in keep if k in tasks}

    def delete(self, exec_ids: Sequence[str]) -> int:
        """Delete executions with their tasks and events; return how many were."""
        with self._lock:
            gone = [i for i in exec_ids if self._executions.pop(i, None) is not None]
            for exec_id in gone:
                self._tasks.pop(exec_id, None)
                self._events.pop(exec_id, None)
        return len(gone)


def _selected(row: Row, task_states: set[str], filters: Filters) -> bool:
    """True when `row` (whose tasks are in `task_states`) meets every filter (`SQLAdmin` says it in SQL)."""
    start = row.start or ""
    failed = row.state in FAILED_STATES or row.task_error is not None
    states = filters.states
    return (
        (states is None or row.state in states or any(s in FAILED_STATES for s in task_states.intersection(states)))
        and (filters.failed is None or failed == filters.failed)
        and (filters.template is None or row.template_id == filters.template)
        and (filters.version is None or row.version == filters.version)
        and (filters.node is None or row.owner == filters.node)
        and (filters.since is None or start >= filters.since)
        and (filters.until is None or start < filters.until)
    )
