"""`PostgresStore`: the journal in PostgreSQL, shared by several engines (needs ``tukio[postgres]``).

The engine's journal commits on the engine's own event loop (`write_soon`):
each loop that writes has its own asyncpg connection and one task that
commits, in order, what the journal hands it; what queued up while a commit
ran goes into the next one (group commit). A batch is one round trip (a
server-side function) and one transaction. Everything else (listing,
loading, heartbeats, claims, events, and `write` from a thread) runs with
asyncpg on a private event loop in a background thread ("tukio-postgres").

Ownership (see `tukio.cluster`): once a node is attached, every execution
row carries its owner and the owner's epoch, and a write for an execution
that another owner (or a newer epoch) holds is refused by the database in
the same transaction; the store reports such executions to `on_fenced`.
Lost connections are retried with backoff: writes wait meanwhile, so
nothing is reported done that is not committed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
import uuid
import weakref
import zlib
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from tukio._report import iso_now
from tukio.policy import Decision, OverrunPolicy
from tukio.store import _ownsql as own
from tukio.store._flow_postgres import PostgresFlow, drive_on
from tukio.store._flow_postgres import blob as _blob
from tukio.store._lease import Beat, lease_clock
from tukio.store._node import OwningNode
from tukio.store._ownsql import COLUMNS, POSTGRES_OWNING, Step
from tukio.store._pgschema import MIGRATIONS, SQL
from tukio.store._sqladmin import POSTGRES, Runner, SQLAdmin
from tukio.store.base import (
    ExecutionInfo,
    ExecutionRecord,
    Record,
    Serializer,
    Store,
    TaskEventRecord,
    TaskRecord,
    build_report,
    iso,
    parse_states,
    parse_time,
    task_events,
)
from tukio.store.journal import shrink

if TYPE_CHECKING:
    import asyncpg

__all__ = ["Beat", "PostgresStore"]

log = logging.getLogger(__name__)

#: Steps on the connection of the node's presence (see `PostgresStore._own`).
_PRESENCE = frozenset({own.join, own.heartbeat, own.leave})
#: Steps of one statement on PostgreSQL (ids go as arrays): they need no transaction.
_ONE_STATEMENT = frozenset({own.heartbeat, own.mark_cancelled, own.unlock, own.leave})

_T = TypeVar("_T")
#: Longest pause between two attempts to reach a database that went away.
MAX_BACKOFF = 2.0
#: Seconds a loop's write connection stays open with nothing to write.
IDLE_CLOSE = 5.0


def _asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError as exc:
        raise ImportError("PostgresStore needs asyncpg: install it with `pip install tukio[postgres]`") from exc
    return asyncpg


class _Link:
    """One connection, used by one coroutine at a time, reopened when it breaks."""

    def __init__(self, store: PostgresStore, name: str) -> None:
        self._store = store
        self._name = name
        self._lock = asyncio.Lock()
        self.conn: asyncpg.Connection | None = None
        self.opened = 0  # how many times a connection was opened

    async def call(self, op: Callable[[asyncpg.Connection], Awaitable[_T]], *, retry: bool = True) -> _T:
        """Run `op` on the connection; on a lost connection, reconnect with backoff and run it again."""
        pg = _asyncpg()
        delay = 0.05
        deadline = None if self._store.retry_for is None else time.monotonic() + self._store.retry_for
        async with self._lock:
            while True:
                try:
                    if self.conn is None or self.conn.is_closed():
                        self.conn = await pg.connect(self._store.dsn, **self._store.connect_options)
                        self.opened += 1
                    return await op(self.conn)
                except Exception as exc:
                    lost = isinstance(exc, _lost_errors(pg)) or (self.conn is not None and self.conn.is_closed())
                    if not lost or not retry:
                        raise
                    if self._store.closing or (deadline is not None and time.monotonic() + delay > deadline):
                        await self.close()
                        raise ConnectionError(f"PostgreSQL unreachable: {type(exc).__name__}: {exc}") from exc
                    log.warning(
                        "PostgresStore %s: connection lost (%s: %s); retrying in %.2fs",
                        self._name,
                        type(exc).__name__,
                        exc,
                        delay,
                    )
                    await self.close()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_BACKOFF)

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 1.0)
            except Exception:
                conn.terminate()


_Batch = tuple[Sequence[Record], Callable[[BaseException | None], None]]


class _Soon:
    """The batches one event loop hands to `PostgresStore.write_soon`, committed in order on that loop.

    Each loop that writes gets its own connection, used by one task on that
    loop: a batch is one round trip from the loop to the server, with no
    thread in between. What is handed over while a commit runs goes into
    the next one (group commit). A lost connection is reopened with backoff
    (`_Link.call`) and the batch written again; its callbacks run only once
    it is committed. The task ends, closing the connection, once the loop
    has had nothing to write for `IDLE_CLOSE` seconds, when the store
    closes, or when it is cancelled (``asyncio.run`` ending): what it did
    not commit then fails (a `ConnectionError`), it is never reported done.
    """

    def __init__(self, store: PostgresStore, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop
        self.link = _Link(store, "loop writer")
        self.pending: list[_Batch] = []
        self.task: asyncio.Task[None] | None = None
        self._waiting: asyncio.Future[None] | None = None  # the idle task waits on it
        self._last = 0.0  # loop time of the last batch handed over
        self._idle: asyncio.TimerHandle | None = None

    def add(self, records: Sequence[Record], done: Callable[[BaseException | None], None]) -> None:
        self.pending.append((records, done))
        self._last = self.loop.time()
        if self.task is None:
            self._start()
        else:
            self._wake()

    def _start(self) -> None:
        self.task = task = self.loop.create_task(self._run(), name="tukio-postgres-writer")
        task.add_done_callback(self._ended)

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def _check_idle(self) -> None:
        self._idle = None
        if self.task is None:
            return
        left = self._last + IDLE_CLOSE - self.loop.time()
        if left > 0:
            self._idle = self.loop.call_later(left, self._check_idle)
        else:
            self._wake()  # with nothing pending, the task ends

    async def _run(self) -> None:
        try:
            while True:
                await self._drain()
                if self._idle is None:
                    self._idle = self.loop.call_later(IDLE_CLOSE, self._check_idle)
                self._waiting = self.loop.create_future()
                await self._waiting
                if not self.pending:
                    return
        finally:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            # Shielded: when cancelled, this still closes the connection cleanly.
            with contextlib.suppress(BaseException):
                await asyncio.shield(self.link.close())

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self.task is not task:
            return
        self.task = None
        if not self.pending:
            return
        if task.cancelled() or self.store.closing:
            # Cancelled (perhaps before it ran) with work left: it fails, never reported done.
            left, self.pending = self.pending, []
            _fail(left)
        else:  # handed over while the idle task was closing its connection
            self._start()

    async def _drain(self) -> None:
        store = self.store
        while self.pending:
            # Group commit: every batch that queued up while the last commit ran goes in this one.
            batch, self.pending = self.pending, []
            records = [r for rs, _ in batch for r in rs]
            error: BaseException | None = None
            if records:
                try:
                    await store.write_on(self.link, records)
                except asyncio.CancelledError:
                    _fail(batch)
                    raise
                except ConnectionError as exc:  # unreachable past `retry_for`: nothing was written
                    log.error("journal: writing %d record(s) to %r failed: %s", len(records), store, exc)
                    error = exc
                except Exception as exc:
                    # One bad record must not fail the others: each batch again alone, record by record.
                    log.warning("journal: a group commit to %r failed (%s); writing its parts alone", store, exc)
                    for part, done in batch:
                        done(await self._alone(part))
                    continue
            for _, done in batch:
                done(error)

    async def _alone(self, records: Sequence[Record]) -> BaseException | None:
        """Write one journal batch, record by record where it must; the error of a record refused whole."""
        try:
            await self.store.write_on(self.link, records)
            return None
        except Exception as exc:
            if isinstance(exc, ConnectionError) or not records:
                return exc
        empty = self.store.serializer.dumps({})
        for record in records:
            steps = shrink(record, empty)
            attempt = next(steps)
            while True:
                try:
                    await self.store.write_on(self.link, [attempt])
                    error: BaseException | None = None
                except Exception as exc:
                    error = exc
                try:
                    attempt = steps.send(error)
                except StopIteration as stop:
                    if not stop.value:
                        return error
                    break
        return None

    async def close(self) -> None:
        """Stop the task (what it did not commit fails) and close the connection."""
        task = self.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await self.link.close()


def _fail(batches: list[_Batch]) -> None:
    error = ConnectionError("the store stopped writing before this batch was committed")
    for _, done in batches:
        done(error)


def _lost_errors(pg: Any) -> tuple[type[BaseException], ...]:
    """The errors that mean the connection is gone (or unusable), not that the query is wrong."""
    return (
        OSError,
        asyncio.TimeoutError,
        pg.PostgresConnectionError,
        pg.OperatorInterventionError,
        pg.InternalClientError,
    )


def _unblob(value: bytes | None, texts: bool) -> str | bytes | None:
    if value is None:
        return None
    return value.decode() if texts else bytes(value)


def _write_task_sql(s: str) -> str:
    """One task record of one node, in one statement: the commonest batch (a task ended, in a chain).

    The same checks as ``write_batch`` (see ``_pgschema``), in the same
    order: the node's epoch is current (its row share-locked), the execution
    is owned by the node under that epoch (its row locked: a claim waits for
    this commit). Returns 1 when written, nothing when fenced. One statement
    instead of the function saves its array parameters and the PL/pgSQL call
    (about a third of a commit's time on a local server).
    """
    return (
        f"WITH n AS (SELECT 1 FROM {s}.nodes WHERE name = $1 AND epoch = $2 FOR SHARE), "
        f"e AS (SELECT 1 FROM {s}.executions WHERE exec_id = $3 AND owner = $1 AND epoch = $2 FOR UPDATE) "
        f"INSERT INTO {s}.tasks AS old (exec_id, task_id, task_exec_id, state, started, ended, data, error, texts) "
        "SELECT $3, $4, $5, $6, $7, $8, $9, $10, $11 WHERE EXISTS (SELECT 1 FROM n) AND EXISTS (SELECT 1 FROM e) "
        "ON CONFLICT (exec_id, task_id) DO UPDATE SET task_exec_id = excluded.task_exec_id, "
        "state = excluded.state, started = excluded.started, ended = excluded.ended, data = excluded.data, "
        "error = excluded.error, texts = excluded.texts RETURNING 1"
    )


def _columns(records: Sequence[Record]) -> list[list[Any]]:
    """Fold `records` (last write wins, as a sequence of upserts) into the columns of `write_batch`."""
    execs: dict[str, ExecutionRecord] = {}
    tasks: dict[tuple[str, str], TaskRecord] = {}
    for r in records:
        if isinstance(r, TaskRecord):
            tasks[r.exec_id, r.task_id] = r
            continue
        if not isinstance(r, ExecutionRecord):
            continue  # a task's event: written apart (see `_event_columns`)
        old = execs.get(r.exec_id)
        if old is not None:
            r = r._replace(
                template_id=r.template_id if r.template_id is not None else old.template_id,
                start=r.start if r.start is not None else old.start,
                template=r.template if r.template is not None else old.template,
                event=r.event if r.event is not None else old.event,
                version=r.version if r.version is not None else old.version,
            )
        execs[r.exec_id] = r
    cols: list[list[Any]] = [[] for _ in range(19)]
    for e in execs.values():
        template, t_text = _blob(e.template)
        event, e_text = _blob(e.event)
        row = (e.exec_id, e.template_id, e.state, e.start, e.end, e.error, template, event)
        for col, value in zip(cols[:8], row, strict=True):
            col.append(value)
        cols[8].append(t_text if e.template is not None else e_text)
        cols[9].append(e.version)
    for t in tasks.values():
        data, d_text = _blob(t.data)
        for col, cell in zip(
            cols[10:],
            (t.exec_id, t.task_id, t.task_exec_id, t.state, t.start, t.end, data, t.error, d_text),
            strict=True,
        ):
            col.append(cell)
    return cols


def _event_columns(events: Sequence[TaskEventRecord]) -> list[list[Any]]:
    """The columns of `SQL.task_events` for `events`."""
    cols: list[list[Any]] = [[] for _ in range(6)]
    for e in events:
        data, texts = _blob(e.data)
        for col, cell in zip(cols, (e.exec_id, e.task_id, e.seq, data, texts, e.error), strict=True):
            col.append(cell)
    return cols


class PostgresStore(PostgresFlow, Store, OwningNode):
    """Keeps executions in a PostgreSQL database; several engines may share it.

    The tables live in their own schema, created and migrated when the store
    opens (the ``schema_version`` table says which migrations ran). Commits
    are as durable as the server makes them (``synchronous_commit``).

    Args:
        dsn: a libpq connection string or URL (``postgresql://user@host/db``).
        schema: the PostgreSQL schema holding tukio's tables (created if missing).
        serializer: encodes data (`JSONSerializer` when None).
        retry_for: seconds to keep retrying when the database cannot be
            reached (None: until it comes back; writes wait meanwhile).
        **connect_options: passed on to ``asyncpg.connect`` (``timeout``,
            ``ssl``, ``server_settings``...).

    Raises:
        ImportError: asyncpg is not installed (``pip install tukio[postgres]``).
        OSError: the database cannot be reached when the store opens.
        asyncpg.PostgresError: the database refused to open or migrate.
    """

    blocking = True
    keeps_events = True
    #: Events are shared through the database, and LISTEN wakes the nodes up (nothing is polled).
    shares_events = True
    event_poll: float | None = None

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "tukio",
        serializer: Serializer | None = None,
        retry_for: float | None = None,
        **connect_options: Any,
    ) -> None:
        _asyncpg()
        Store.__init__(self, serializer)
        if not schema:
            raise ValueError("schema must not be empty")
        self.dsn = dsn
        self.schema = schema
        self.retry_for = retry_for
        self.connect_options = connect_options
        self.closing = False
        self.sql = SQL(schema)
        self._owning = POSTGRES_OWNING(self.sql.schema)  # the ownership protocol (see `tukio.store._ownsql`)
        self._write_task = _write_task_sql(self.sql.schema)
        OwningNode.__init__(self, lease_clock)  # the node's own deadline (leases are on the server's clock)
        # The writer of each event loop that writes (see `write_soon`).
        self._soon: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Soon] = weakref.WeakKeyDictionary()
        # The connection of each loop's flow control (see `PostgresFlow`).
        self._flow_links: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Link] = weakref.WeakKeyDictionary()
        self._namespace = zlib.crc32(schema.encode()) & 0x7FFFFFFF
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tukio-postgres", daemon=True)
        self._thread.start()
        self._writer = _Link(self, "writer")
        self._reader = _Link(self, "reader")
        self._presence = _Link(self, "presence")
        self._listener = _Link(self, "listener")
        # The connection LISTENing for each kind of notification (events, cancels, flow).
        self._listening_on: dict[str, Any] = {}
        try:
            self._run(self._reader.call(self._migrate, retry=False))
        except BaseException:
            self.close()
            raise

    # -- plumbing ----------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop.is_closed():
            coro.close()
            raise RuntimeError(f"{self!r} is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("PostgresStore cannot be called from its own thread")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        # (Not `result(timeout)`: the call itself may fail with a TimeoutError.)
        while not concurrent.futures.wait([future], timeout=0.5).done:
            # Closed meanwhile: the call will never end (a thread waiting forever would keep
            # its pool, and the interpreter, from shutting down).
            if not self._thread.is_alive():
                future.cancel()
                raise RuntimeError(f"{self!r} is closed")
        return future.result()

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        s = self.sql.schema
        async with conn.transaction():
            # One process migrates at a time; the others find the work done.
            await conn.execute("SELECT pg_advisory_xact_lock($1::int4, 0)", self._namespace)
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL)")
            version = await conn.fetchval(f"SELECT max(version) FROM {s}.schema_version") or 0
            if version > len(MIGRATIONS):
                raise RuntimeError(
                    f"schema {self.schema!r} is at version {version}, newer than this tukio knows "
                    f"({len(MIGRATIONS)}): upgrade tukio"
                )
            for number in range(version + 1, len(MIGRATIONS) + 1):
                await conn.execute(MIGRATIONS[number - 1].format(s=s))
                await conn.execute(f"INSERT INTO {s}.schema_version (version) VALUES ($1)", number)
                log.info("PostgresStore: schema %r migrated to version %d", self.schema, number)

    @property
    def version(self) -> int:
        """The schema version of the database."""
        return int(
            self._run(
                self._reader.call(lambda c: c.fetchval(f"SELECT max(version) FROM {self.sql.schema}.schema_version"))
            )
        )

    # -- the journal -----------------------------------------------------------------------
    def write(self, records: Sequence[Record]) -> None:
        """Apply `records` in one transaction, once committed return (see `Store.write`).

        Records of executions this node does not own (another node took them
        over, or this node was restarted elsewhere) are dropped, and their ids
        given to `on_fenced`; the other records are written.
        """
        if records:
            self.submit(records).result()

    def write_soon(self, records: Sequence[Record], done: Callable[[BaseException | None], None]) -> bool:
        """Commit `records` from the running loop on a connection of that loop (see `Store.write_soon`).

        Batches given while a commit runs go together into the next one.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if self.closing or loop is self._loop:
            return False
        soon = self._soon.get(loop)
        if soon is None:
            soon = self._soon[loop] = _Soon(self, loop)
        soon.add(records, done)
        return True

    def submit(self, records: Sequence[Record]) -> concurrent.futures.Future[None]:
        """Start writing `records` (see `write`); the future is done once they are committed.

        Raises:
            RuntimeError: the store is closed.
        """
        if self._loop.is_closed():
            raise RuntimeError(f"{self!r} is closed")
        return asyncio.run_coroutine_threadsafe(self._write(records), self._loop)

    async def _write(self, records: Sequence[Record]) -> None:
        await self.write_on(self._writer, records)

    async def write_on(self, link: _Link, records: Sequence[Record]) -> None:
        """Commit `records` through `link` (one round trip), on the loop that runs this.

        Fenced records are dropped by the database and their executions given
        to `on_fenced`. When the commit returns after the node's lease ran
        out by the local clock (this process was paused, say), the executions
        may have been taken over right after it: those are asked for and
        given too.
        """
        if self.node is not None and self.epoch is None:
            await asyncio.to_thread(self._ensure_joined)
        sql = self.sql
        only = records[0] if len(records) == 1 else None
        if isinstance(only, TaskRecord) and self.node is not None:
            data, texts = _blob(only.data)
            row = (only.exec_id, only.task_id, only.task_exec_id, only.state, only.start, only.end, data, only.error)

            async def one(conn: asyncpg.Connection) -> Any:
                return await conn.fetchval(self._write_task, self.node, self.epoch, *row, texts)

            fenced = [] if await link.call(one) == 1 else [only.exec_id]
        else:
            cols = _columns(records)
            # Events of tasks: the same, then the events, in one statement (see _pgschema, migration 3).
            events = [r for r in records if type(r) is TaskEventRecord]
            query = sql.write_events if events else sql.write
            more = _event_columns(events) if events else []

            async def batch(conn: asyncpg.Connection) -> Any:
                return await conn.fetchval(query, self.node, self.epoch, *cols, *more)

            fenced = list(await link.call(batch) or ())
        if fenced:
            log.warning("PostgresStore: node %s no longer owns %d execution(s): writes refused", self.node, len(fenced))
            if self.on_fenced is not None:
                self.on_fenced(fenced)
        if self.lease_expired():
            ids = list({r.exec_id for r in records} - set(fenced))
            node, epoch = self.node, self.epoch
            assert node is not None
            assert epoch is not None
            gone = await link.call(lambda c: drive_on(c, own.lost(self._owning, node, epoch, ids)))
            if gone:
                log.warning("PostgresStore: node %s was late and lost %d execution(s)", node, len(gone))
                if self.on_fenced is not None:
                    self.on_fenced(gone)

    def task_events(self, exec_id: str) -> dict[str, list[tuple[int, Any]]]:
        """The events journaled for the tasks of an execution (see `Store.task_events`)."""
        query = f"SELECT task_id, seq, data, error, texts FROM {self.sql.schema}.task_events WHERE exec_id = $1"
        rows = self._run(self._reader.call(lambda c: c.fetch(query, exec_id)))
        return task_events(self.serializer, exec_id, [(r[0], r[1], _unblob(r[2], r[4]), r[3]) for r in rows])

    def executions(
        self, *, state: str | Iterable[str] | None = None, template_id: str | None = None
    ) -> list[ExecutionInfo]:
        """List executions, oldest first (see `Store.executions`)."""
        clauses: list[str] = []
        params: list[Any] = []
        states = parse_states(state)
        if states is not None:
            params.append(sorted(states))
            clauses.append(f"state = ANY(${len(params)})")
        if template_id is not None:
            params.append(template_id)
            clauses.append(f"template_id = ${len(params)}")
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        query = f"SELECT {COLUMNS} FROM {self.sql.schema}.executions{where} ORDER BY started NULLS FIRST, exec_id"
        rows = self._run(self._reader.call(lambda c: c.fetch(query, *params)))
        return [_info(r) for r in rows]

    def load(self, exec_id: str) -> dict[str, Any]:
        """Return the report of one execution (see `Store.load`).

        Raises:
            KeyError: no execution has that id.
        """

        async def op(conn: asyncpg.Connection) -> tuple[Any, list[Any]]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await conn.fetchrow(self.sql.load_execution, exec_id), await conn.fetch(
                    self.sql.load_tasks, exec_id
                )

        found, tasks = self._run(self._reader.call(op))
        if found is None:
            raise KeyError(f"no execution {exec_id!r} in the store")
        execution = ExecutionRecord(
            found[0],
            found[1],
            found[2],
            found[3],
            found[4],
            found[5],
            template=_unblob(found["template"], found["template_texts"]),
            event=_unblob(found["event"], found["texts"]),
            version=found["version"],
        )
        records = [TaskRecord(exec_id, t[0], t[1], t[2], t[3], t[4], _unblob(t[5], t[7]) or b"", t[6]) for t in tasks]
        return build_report(self.serializer, execution, records)

    def prune(self, *, before: datetime | None = None, template_id: str | None = None) -> int:
        """Delete finished executions (see `Store.prune`)."""
        s = self.sql.schema
        where = (
            "state NOT IN ('pending', 'queued') AND ($1::text IS NULL OR ended < $1) "
            "AND ($2::text IS NULL OR template_id = $2)"
        )

        async def op(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                rows = await conn.fetch(
                    f"DELETE FROM {s}.executions WHERE {where} RETURNING exec_id", iso(before), template_id
                )
                ids = [r[0] for r in rows]
                await conn.execute(f"DELETE FROM {s}.tasks WHERE exec_id = ANY($1)", ids)
                await conn.execute(f"DELETE FROM {s}.task_events WHERE exec_id = ANY($1)", ids)
                return len(ids)

        return self._run(self._reader.call(op))

    # -- ownership (see tukio.cluster) ------------------------------------------------------------
    def _own(self, step: Callable[..., Step], *args: Any, write: bool = False, retry: bool = True) -> Any:
        """Run a step of the ownership protocol (see `tukio.store._ownsql`); with `write`, atomically.

        A step of one statement here (ids go as arrays) needs no
        transaction: a round trip, not three. The node's presence (join,
        heartbeat, leave) has its own connection, never behind a slow read;
        unlocks go after the node's writes, on theirs. A step whose
        connection was lost is made and run again (unless not `retry`).
        """
        link = self._presence if step in _PRESENCE else self._writer if step is own.unlock else self._reader
        atomic = write and step not in _ONE_STATEMENT

        async def op(conn: asyncpg.Connection) -> Any:
            if not atomic:
                return await drive_on(conn, step(self._owning, *args))
            async with conn.transaction():
                return await drive_on(conn, step(self._owning, *args))

        return self._run(link.call(op, retry=retry))

    def version_rows(
        self, *, template_id: str | None = None, version: str | None = None
    ) -> list[tuple[str, str | None, str | bytes]]:
        """The stored template versions (see `Store.version_rows`)."""
        query = self.sql.version_rows
        rows = self._run(self._reader.call(lambda c: c.fetch(query, template_id, version)))
        return [(r[0], r[1], _unblob(r[2], r[3]) or b"") for r in rows]

    def repin(self, exec_id: str, version: str, template: str | bytes, renames: dict[str, str]) -> None:
        """Pin an unfinished execution to another template version (see `Store.repin`)."""
        s = self.sql.schema
        blob, texts = _blob(template)
        olds, news = list(renames), list(renames.values())

        async def op(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                template_id = await conn.fetchval(
                    f"SELECT template_id FROM {s}.executions WHERE exec_id = $1 AND state = 'pending' FOR UPDATE",
                    exec_id,
                )
                if template_id is None:
                    raise KeyError(f"no unfinished execution {exec_id!r} in the store")
                await conn.execute(
                    f"INSERT INTO {s}.versions (version, template_id, template, texts) VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (version) DO NOTHING",
                    version,
                    template_id,
                    blob,
                    texts,
                )
                await conn.execute(
                    f"UPDATE {s}.executions SET version = $2, template = NULL WHERE exec_id = $1", exec_id, version
                )
                for table in ("tasks", "task_events"):
                    await conn.execute(
                        f"DELETE FROM {s}.{table} WHERE exec_id = $1 AND NOT task_id = ANY($2)", exec_id, olds
                    )
                    # Through names no task has: two tasks may swap their ids.
                    await conn.execute(
                        f"UPDATE {s}.{table} AS t SET task_id = $4 || m.new "
                        "FROM unnest($2::text[], $3::text[]) AS m(old, new) WHERE t.exec_id = $1 AND t.task_id = m.old",
                        exec_id,
                        olds,
                        news,
                        _MOVING,
                    )
                    await conn.execute(
                        f"UPDATE {s}.{table} SET task_id = substr(task_id, length($2) + 1) "
                        "WHERE exec_id = $1 AND starts_with(task_id, $2)",
                        exec_id,
                        _MOVING,
                    )

        self._run(self._writer.call(op))

    def leave(self) -> None:
        """End the node's lease now: what it still owns is taken over at once."""
        node, epoch = self.node, self.epoch
        if node is None or epoch is None:
            return
        # One attempt: a node that cannot reach the database lets its lease run out instead.
        self._own(own.leave, node, epoch, retry=False)

    def admit(self, policy: OverrunPolicy, begin: ExecutionRecord, here: Collection[str]) -> tuple[Decision, list[str]]:
        """Apply `policy` to a trigger across every node; unless it skips, record `begin`.

        One transaction under an advisory lock of the template: the unfinished
        executions of the template are read (locked against claims), the
        policy rules, and the new execution's begin record is inserted,
        owned by this node. Under 'abort-running' the executions of dead
        nodes are marked cancelled and those of live ones get a cancel
        request (their owner acts on it at its next heartbeat).

        Args:
            policy: the template's overrun policy.
            begin: the new execution's begin record (its template id names the template).
            here: the executions this node runs or is admitting now.

        Returns:
            The decision, and the executions the new one waits for before it
            starts (abort-running: those running here, and those requested).
            A node that was replaced (a newer epoch) is told to skip.
        """
        node = self._attached()
        return self._run(self._admit(node, policy, begin, list(here)))

    def admit_soon(
        self, policy: OverrunPolicy, begin: ExecutionRecord, here: Collection[str]
    ) -> concurrent.futures.Future[tuple[Decision, list[str]]] | None:
        """Start `admit` without blocking (no thread in between); the future is done with its answer.

        Returns:
            None when the node has not joined yet: call `admit` (from a thread) then.
        """
        if self.node is None or self.epoch is None or self._loop.is_closed():
            return None
        return asyncio.run_coroutine_threadsafe(self._admit(self.node, policy, begin, list(here)), self._loop)

    async def _admit(
        self, node: str, policy: OverrunPolicy, begin: ExecutionRecord, here: list[str]
    ) -> tuple[Decision, list[str]]:
        tid = begin.template_id
        key = zlib.crc32(f"{self.schema}\0{tid}".encode()) - (1 << 31)  # an int4
        template, texts = _blob(begin.template)
        event, e_texts = _blob(begin.event)
        args = (
            node,
            self.epoch,
            self._namespace ^ 1,  # (nodes hold (namespace, their id), events (namespace, 0))
            key,
            self._namespace,
            str(policy.value),
            here,
            begin.exec_id,
            tid,
            begin.start,
            template,
            event,
            texts if begin.template is not None else e_texts,
            iso_now(),
            begin.version,
        )
        row = await self._reader.call(lambda c: c.fetchrow(self.sql.admit, *args))
        return self._admitted(row, node, tid)

    def _admitted(self, row: Any, node: str, tid: str | None) -> tuple[Decision, list[str]]:
        if row[0] == "replaced":
            log.warning("PostgresStore: node %s was replaced: trigger of %s skipped", node, tid)
            return Decision.skip, []
        return Decision(row[0]), list(row[1])

    def listen_cancels(self, wake: Callable[[], None]) -> bool:
        """Call `wake` (from the store's thread) whenever an admission asks a node to cancel executions.

        Returns:
            True when listening (again, on a new connection); False when already listening.
        """

        return self._listen_on(f"tukio_cancels_{self._namespace}", wake, "cancels", lost_too=False)

    def prune_nodes(self, grace: float) -> list[str]:
        """Delete the rows of dead nodes with a default name, once they own no unfinished execution.

        Only nodes whose name was made for one engine (`default_node_name`:
        it never comes back) whose lease expired more than `grace` seconds
        ago are deleted, never this node. A zombie of a pruned node finds its
        row gone: its writes are refused, as those of a replaced node.

        Returns:
            The names of the nodes deleted.
        """
        node = self._attached()
        s = self.sql.schema
        query = (
            f"DELETE FROM {s}.nodes AS n WHERE n.ephemeral AND n.name <> $1 "
            "AND n.expires < now() - make_interval(secs => $2) "
            f"AND NOT EXISTS (SELECT 1 FROM {s}.executions AS x WHERE x.owner = n.name AND x.state = 'pending') "
            "RETURNING n.name"
        )
        rows = self._run(self._reader.call(lambda c: c.fetch(query, node, float(grace))))
        if rows:
            log.info("PostgresStore: pruned %d dead node(s)", len(rows))
        return sorted(r[0] for r in rows)

    # -- management (see tukio.manage) -------------------------------------------------------------
    def admin(self) -> SQLAdmin:
        """The queries and actions of `tukio.manage` on this schema (see `tukio.store._admin`)."""
        signal = f"SELECT pg_notify('tukio_cancels_{self._namespace}', '')"  # the owners act at once
        return SQLAdmin(
            POSTGRES(self.sql.schema),
            Runner(self._admin_fetch, self._admin_execute, self._live, self._node_rows, signal),
        )

    def _admin_fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._run(self._reader.call(lambda c: c.fetch(query, *params)))]

    def _admin_execute(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        async def op(conn: asyncpg.Connection) -> list[int]:
            async with conn.transaction():
                return [_count(await conn.execute(query, *params)) for query, params in statements]

        return self._run(self._reader.call(op))

    def _node_rows(self) -> list[tuple[str, int, float]]:
        query = f"SELECT name, epoch, extract(epoch FROM expires)::float8 FROM {self.sql.schema}.nodes ORDER BY name"
        return self._admin_fetch(query, ())

    # -- events shared by the nodes ---------------------------------------------------------------
    @property
    def channel(self) -> str:
        """The PostgreSQL NOTIFY channel of this schema's events."""
        return f"tukio_events_{self._namespace}"

    def publish(self, data: Any, topic: str | None, *, key: str | None = None) -> int:
        """Keep `data` (on `topic`) for the other nodes and wake them up.

        The event is kept once, whatever the connection does: it carries a
        key, and publishing again after a lost connection (whose commit may
        have happened) returns the event kept already.

        Args:
            data: what the listening tasks get.
            topic: its topic.
            key: the event's key (a UUID string; a new one when None): the
                same key publishes once.

        Returns:
            The event's id (ids grow in the order events are published).

        Raises:
            Exception: the serializer cannot encode `data`.
            ValueError: `key` is not a UUID.
        """
        blob, texts = _blob(self.serializer.dumps(data))
        query = self.sql.publish
        event_key = uuid.uuid4() if key is None else uuid.UUID(key)
        args = (self.node, topic, blob, texts, self._namespace, self.channel, event_key)
        return int(self._run(self._writer.call(lambda c: c.fetchval(query, *args))))

    def event_cursor(self) -> int:
        """The id of the last event published so far (0: none)."""
        return int(self._run(self._reader.call(lambda c: c.fetchval(self.sql.event_cursor))))

    def events_after(self, cursor: int, *, everyone: bool = False) -> list[tuple[int, str | None, str | None, Any]]:
        """Events other nodes (with `everyone`, every node) published after `cursor`, in order:
        ``(id, origin, topic, data)`` (1,000 at most)."""
        node = None if everyone else self.node
        rows = self._run(self._reader.call(lambda c: c.fetch(self.sql.events_after, cursor, node)))
        return [(r[0], r[1], r[2], self.serializer.loads(_unblob(r[3], r[4]) or b"")) for r in rows]

    def prune_events(self, older_than: float) -> int:
        """Delete the events published more than `older_than` seconds ago; return how many."""
        status = self._run(self._reader.call(lambda c: c.execute(self.sql.prune_events, older_than)))
        return int(str(status).split()[-1])

    def listen(self, wake: Callable[[], None]) -> bool:
        """Call `wake` (from the store's thread) whenever an event is published.

        `wake` is called too when the listening connection is lost: the
        caller listens again at once (on a new connection) and reads the
        events published meanwhile from its cursor.

        Returns:
            True when listening (again); False when already listening.
        """
        return self._listen_on(self.channel, wake, "events", lost_too=True)

    def _listen_on(self, channel: str, wake: Callable[[], None], what: str, *, lost_too: bool) -> bool:
        """LISTEN on `channel` (through the listener's connection), calling `wake` for each notification.

        `what` names the listening (one per connection: again after it was
        lost); with `lost_too`, `wake` is called too when the connection is lost.

        Returns:
            True when listening (again); False when already listening.
        """

        async def op(conn: asyncpg.Connection) -> bool:
            if self._listening_on.get(what) is conn:
                return False
            await conn.add_listener(channel, lambda *_: wake())
            if lost_too:
                conn.add_termination_listener(lambda *_: wake())
            self._listening_on[what] = conn
            return True

        return bool(self._run(self._listener.call(op)))

    def close(self) -> None:
        """Close the connections and stop the store's thread (idempotent)."""
        if self._loop.is_closed():
            return
        self.closing = True

        async def shut() -> None:
            for link in (self._writer, self._reader, self._presence, self._listener):
                await link.close()

        try:
            self._close_loop_writers()
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5.0)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def _close_loop_writers(self) -> None:
        """Close the connections the engines' loops write through (`write_soon`, flow control's steps)."""
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for loop, soon in list(self._soon.items()):
            if (loop is here or loop.is_closed()) and soon.task is not None:
                soon.task.cancel()
            _close_on(loop, here, soon.link, soon.close)
        self._soon.clear()
        for loop, link in list(self._flow_links.items()):
            _close_on(loop, here, link, link.close)
        self._flow_links.clear()

    def _link(self, name: str) -> _Link:
        """A new connection of this store, used by one coroutine at a time."""
        return _Link(self, name)

    def __repr__(self) -> str:
        return f"<PostgresStore schema={self.schema!r}{'' if self.node is None else f' node={self.node!r}'}>"


#: The prefix of a task id being renamed by `PostgresStore.repin` (within its transaction).
_MOVING = "\x01moving:"


def _close_on(
    loop: asyncio.AbstractEventLoop,
    here: asyncio.AbstractEventLoop | None,
    link: _Link,
    close: Callable[[], Coroutine[Any, Any, None]],
) -> None:
    """Close `link`, a connection of `loop`, with `close()` run on that loop if it can run it."""
    if loop is here or loop.is_closed():
        # Cannot wait for a goodbye on the loop that runs this call: close the socket now.
        conn, link.conn = link.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()
    elif loop.is_running():  # another thread's loop
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), loop).result(5.0)
    else:
        with contextlib.suppress(Exception):
            loop.run_until_complete(close())


def _count(status: str) -> int:
    """The rows a statement touched, from its status ("DELETE 3"; 0 for "ANALYZE")."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def _info(row: Any) -> ExecutionInfo:
    return ExecutionInfo(row[0], row[1], row[2], parse_time(row[3]), parse_time(row[4]), row[5], version=row[6])
