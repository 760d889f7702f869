"""The durable queue of flow control in a SQLite file (see `tukio.store._flowsql`).

A mixin of `SQLiteStore`: each step is one write transaction (``BEGIN
IMMEDIATE``: one process at a time holds the file's write lock, so no other
lock of the template is needed); times are the wall clock (``time.time()``)
of the processes of one host.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tukio._report import iso_now
from tukio.store._flowsql import (
    QUEUED,
    FlowRow,
    Limits,
    QueueRow,
    Statement,
    StepResult,
    drive,
    ended_query,
    launches,
    queue_query,
    step,
)

__all__ = ["SQLiteFlow"]

_INSERT = (
    "INSERT INTO executions (exec_id, template_id, state, started, event, version, owner, epoch, "
    f"priority, part, due, queued_at) VALUES (?, ?, '{QUEUED}', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: A step of at most this many new rows may run on the caller's loop.
_INLINE = 1
_VERSION = "INSERT OR IGNORE INTO versions (version, template_id, template, created) VALUES (?, ?, ?, ?)"


class SQLiteFlow:
    """The flow-control calls of `SQLiteStore` (see `tukio.store._flowsql.FlowStore`)."""

    #: Seconds between two looks of a node that waits for another node's admission (SQLite cannot signal).
    flow_poll: float | None = 0.05

    # SQLiteStore's:
    _lock: Any
    _conn: Callable[[], sqlite3.Connection]
    _attached: Callable[[], str]
    _epoch: Callable[[], int]
    _transaction: Callable[[sqlite3.Connection], contextlib.AbstractContextManager[None]]
    _busy: Callable[[sqlite3.OperationalError], bool]
    _fast: sqlite3.Connection | None
    _owner: tuple[str, int] | None

    def _run_statement(self, db: sqlite3.Connection, statement: Statement) -> list[tuple[Any, ...]]:
        if statement.many:
            db.executemany(statement.sql, statement.params)
            return []
        return db.execute(statement.sql, statement.params).fetchall()

    async def flow_step(
        self, template_id: str, limits: Limits, rows: Sequence[FlowRow] = (), look_due: bool = True
    ) -> StepResult:
        """Queue `rows` (this node's new triggers of `template_id`) and admit what may start, in one transaction.

        A step of one new row at most (a lone trigger, a step with nothing new)
        runs on the caller's loop when the file's write lock is free at once:
        a few statements, as the journal's own writes on the loop. A larger
        one, or one that would wait for the lock, runs in a thread: the loop
        takes more triggers meanwhile, and the next step takes them all.
        """
        fast, owner = self._fast, self._owner
        if fast is not None and owner is not None and len(rows) <= _INLINE and self._lock.acquire(blocking=False):
            try:
                return self._step_on(fast, owner, template_id, limits, rows, look_due)
            except sqlite3.OperationalError as exc:
                if not self._busy(exc):  # (busy: rolled back; the thread waits for the lock)
                    raise
            finally:
                self._lock.release()
        return await asyncio.to_thread(self._flow_step, template_id, limits, rows, look_due)

    async def flow_launches(self) -> list[tuple[str, str]]:
        """Take this node's rows that other nodes admitted: (execution id, template id) of each, to launch."""
        return await asyncio.to_thread(self._flow_launches)

    async def flow_release(self) -> None:
        """Nothing to release: the steps use the store's connection."""

    async def pause_schedule(self, template_id: str, paused: bool) -> None:
        """Pause (or resume) the schedule of `template_id` for every engine of the store."""
        await asyncio.to_thread(self._pause_schedule, template_id, paused)

    def _pause_schedule(self, template_id: str, paused: bool) -> None:
        with self._lock:
            db = self._conn()
            with self._transaction(db):
                if paused:
                    db.execute(
                        "INSERT OR REPLACE INTO schedule_pauses (template_id, at) VALUES (?, ?)",
                        (template_id, time.time()),
                    )
                else:
                    db.execute("DELETE FROM schedule_pauses WHERE template_id = ?", (template_id,))

    async def schedule_paused(self, template_id: str) -> bool:
        """Whether the schedule of `template_id` is paused for every engine of the store."""
        return await asyncio.to_thread(self._schedule_paused, template_id)

    def _schedule_paused(self, template_id: str) -> bool:
        with self._lock:
            query = "SELECT 1 FROM schedule_pauses WHERE template_id = ?"
            return bool(self._conn().execute(query, (template_id,)).fetchall())

    def _flow_step(self, template_id: str, limits: Limits, rows: Sequence[FlowRow], look_due: bool) -> StepResult:
        owner = self._attached(), self._epoch()  # (joins first if need be, taking the lock)
        with self._lock:
            return self._step_on(self._conn(), owner, template_id, limits, rows, look_due)

    def _step_on(
        self,
        db: sqlite3.Connection,
        owner: tuple[str, int],
        template_id: str,
        limits: Limits,
        rows: Sequence[FlowRow],
        look_due: bool,
    ) -> StepResult:
        """One step through `db` for `owner` (node, epoch), the store's lock held."""
        now = time.time()
        values = [
            (b.exec_id, b.template_id, b.start, b.event, b.version, *owner, r.priority, r.part, r.due, now)
            for r in rows
            for b in (r.begin,)
        ]
        versions = {r.begin.version: r.begin for r in rows if r.begin.version is not None and r.begin.template}
        insert = Statement(_INSERT, values, many=True) if rows else None
        with self._transaction(db):
            if versions:
                db.executemany(_VERSION, [(v, b.template_id, b.template, b.start) for v, b in versions.items()])
            ids = [r.begin.exec_id if r.keyed else None for r in rows]
            gen = step("executions", template_id, owner, now, limits, insert, ids, look_due)
            return drive(gen, lambda st: self._run_statement(db, st))

    def _flow_launches(self) -> list[tuple[str, str]]:
        owner = self._attached(), self._epoch()
        with self._lock:
            db = self._conn()
            with self._transaction(db):
                return drive(launches("executions", owner), lambda st: self._run_statement(db, st))

    def flow_queue(self, template_id: str | None = None) -> list[QueueRow]:
        """The queued executions (of one template, or all), in the order they would start once due."""
        statement = queue_query("executions", template_id)
        with self._lock:
            return [QueueRow(*r) for r in self._conn().execute(statement.sql, statement.params).fetchall()]

    def flow_templates(self) -> list[str]:
        """The templates with queued executions."""
        with self._lock:
            rows = self._conn().execute(f"SELECT DISTINCT template_id FROM executions WHERE state = '{QUEUED}'")
            return [r[0] for r in rows.fetchall()]

    def flow_cancel(self, exec_ids: Iterable[str]) -> list[str]:
        """Record these executions of this node as cancelled if they have not started; return those cancelled."""
        node = self._attached()
        ids = list(exec_ids)
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        ended = iso_now()
        where = f"exec_id IN ({marks}) AND owner = ? AND (state = '{QUEUED}' OR (state = 'pending' AND launch = 1))"
        with self._lock:
            db = self._conn()
            with self._transaction(db):
                found = [r[0] for r in db.execute(f"SELECT exec_id FROM executions WHERE {where}", (*ids, node))]
                db.execute(
                    f"UPDATE executions SET state = 'cancelled', ended = ?, launch = 0, locked = 0 WHERE {where}",
                    (ended, *ids, node),
                )
        return found

    def flow_ended(self, exec_ids: Sequence[str]) -> list[str]:
        """Those of `exec_ids` that ended without starting (cancelled while queued, by an operator say)."""
        out: list[str] = []
        with self._lock:
            for start in range(0, len(exec_ids), 500):
                statement = ended_query("executions", exec_ids[start : start + 500])
                out.extend(r[0] for r in self._conn().execute(statement.sql, statement.params).fetchall())
        return out

    def flow_listen(self, wake: Any) -> bool:
        """SQLite cannot signal other processes: never calls `wake` (nodes look every `flow_poll`); returns False."""
        return False
