"""The durable queue of flow control in PostgreSQL (see `tukio.store._flowsql`).

A mixin of `PostgresStore`: each step is one transaction holding an
advisory lock of the template (steps of one template, on any node, take
turns; other templates' go on), with times on the server's clock. A step
that admits rows of other nodes notifies them (``NOTIFY`` on the schema's
flow channel), so they launch them at once.
"""

from __future__ import annotations

import asyncio
import functools
import re
import weakref
import zlib
from collections.abc import Callable, Coroutine, Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tukio._report import iso_now
from tukio.store._flowsql import (
    QUEUED,
    FlowRow,
    Limits,
    QueueRow,
    Statement,
    StepResult,
    ended_query,
    launches,
    queue_query,
    step,
)

if TYPE_CHECKING:
    import asyncpg

    from tukio.store._pgschema import SQL
    from tukio.store.postgres import _Link

__all__ = ["PostgresFlow"]

_T = TypeVar("_T")


@functools.lru_cache(maxsize=256)
def numbered(sql: str) -> str:
    """`sql` with its ``?`` placeholders numbered as PostgreSQL wants them (``$1``, ``$2``...)."""
    count = iter(range(1, 1 << 30))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


async def _run_statement(conn: asyncpg.Connection, statement: Statement) -> list[tuple[Any, ...]]:
    sql = numbered(statement.sql)
    if statement.many:
        await conn.executemany(sql, statement.params)
        return []
    return [tuple(r) for r in await conn.fetch(sql, *statement.params)]


class PostgresFlow:
    """The flow-control calls of `PostgresStore` (see `tukio.store._flowsql`)."""

    #: None: a node is told (LISTEN) when another node admits its queued executions.
    flow_poll: float | None = None

    sql: SQL
    schema: str
    _namespace: int
    _reader: _Link
    _listener: _Link
    _flow_links: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Link]
    if TYPE_CHECKING:  # PostgresStore's

        def _run(self, coro: Coroutine[Any, Any, _T]) -> _T: ...
        def _attached(self) -> str: ...
        def _link(self, name: str) -> _Link: ...
        def _listen_on(self, channel: str, wake: Callable[[], None], what: str, *, lost_too: bool) -> bool: ...

    epoch: int | None

    @property
    def flow_channel(self) -> str:
        """The NOTIFY channel that tells nodes their queued executions were admitted."""
        return f"tukio_flow_{self._namespace}"

    def _loop_link(self) -> _Link:
        """The connection of the running event loop's flow control (steps run on the engine's loop, no thread)."""
        loop = asyncio.get_running_loop()
        link = self._flow_links.get(loop)
        if link is None:
            link = self._flow_links[loop] = self._link("flow")
        return link

    async def flow_release(self) -> None:
        """Close the running loop's flow connection (the engine stops)."""
        link = self._flow_links.pop(asyncio.get_running_loop(), None)
        if link is not None:
            await link.close()

    async def flow_step(
        self, template_id: str, limits: Limits, rows: Sequence[FlowRow] = (), look_due: bool = True
    ) -> StepResult:
        """Queue `rows` (this node's new triggers of `template_id`) and admit what may start, in one transaction.

        It runs on the caller's loop, through a connection of that loop's own.
        A lost connection is not retried here: the step fails (the flow
        control tries again at its next step; a trigger whose rows were
        committed before the answer was lost runs all the same).
        """
        node = self._attached()
        assert self.epoch is not None
        owner = (node, self.epoch)
        s = self.sql.schema
        key = zlib.crc32(f"{self.schema}\0{template_id}".encode()) - (1 << 31)
        values: list[tuple[Any, ...]] = []
        versions: dict[str, tuple[Any, ...]] = {}
        for r in rows:
            b = r.begin
            event, texts = blob(b.event)
            row = (b.exec_id, b.template_id, b.start, event, texts, b.version, *owner, r.priority, r.part, r.due)
            values.append(row)
            if b.version is not None and b.template is not None and b.version not in versions:
                versions[b.version] = (b.version, b.template_id, *blob(b.template))
        insert = Statement(
            f"INSERT INTO {s}.executions (exec_id, template_id, state, started, event, texts, version, owner, epoch, "
            f"priority, part, due, queued_at) VALUES (?, ?, '{QUEUED}', ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "extract(epoch FROM clock_timestamp()))",
            values,
            many=True,
        )
        ids = [r.begin.exec_id if r.keyed else None for r in rows]
        lock = Statement(
            "SELECT pg_advisory_xact_lock(?, ?), extract(epoch FROM clock_timestamp())::float8",
            (self._namespace ^ 2, key),
        )
        admit = None
        if not limits.partitioned and limits.rate is None and not look_due:  # in one round trip
            admit = Statement(
                f"SELECT launch FROM {s}.flow_admit(?, ?, ?, ?::int4, ?::int4, ?::int4, ?)",
                (template_id, *owner, limits.concurrency, self._namespace ^ 2, key, self.flow_channel),
            )

        async def op(conn: asyncpg.Connection) -> StepResult:
            if admit is not None and not rows:  # one statement, its own transaction
                return await drive_on(conn, step(f"{s}.executions", template_id, owner, 0.0, limits, admit=admit))
            async with conn.transaction():
                if versions:
                    await conn.executemany(
                        f"INSERT INTO {s}.versions (version, template_id, template, texts) VALUES ($1, $2, $3, $4) "
                        "ON CONFLICT (version) DO NOTHING",
                        list(versions.values()),
                    )
                gen = step(
                    f"{s}.executions",
                    template_id,
                    owner,
                    0.0,  # (the time is read as the lock is taken)
                    limits,
                    insert if rows else None,
                    ids,
                    look_due,
                    arrays=True,
                    lock=lock,
                    admit=admit,
                )
                result = await drive_on(conn, gen)
                if result.others:
                    await conn.execute("SELECT pg_notify($1, '')", self.flow_channel)
                return result

        return await self._loop_link().call(op, retry=False)

    async def flow_launches(self) -> list[tuple[str, str]]:
        """Take this node's rows that other nodes admitted: (execution id, template id) of each, to launch."""
        node = self._attached()
        assert self.epoch is not None
        gen = launches(f"{self.sql.schema}.executions", (node, self.epoch), arrays=True, returning=True)

        async def op(conn: asyncpg.Connection) -> list[tuple[str, str]]:
            return await drive_on(conn, gen)  # one statement, its own transaction

        return await self._loop_link().call(op, retry=False)

    async def pause_schedule(self, template_id: str, paused: bool) -> None:
        """Pause (or resume) the schedule of `template_id` for every engine of the store."""
        s = self.sql.schema
        if paused:
            query = f"INSERT INTO {s}.schedule_pauses (template_id) VALUES ($1) ON CONFLICT DO NOTHING"
        else:
            query = f"DELETE FROM {s}.schedule_pauses WHERE template_id = $1"
        await self._loop_link().call(lambda c: c.execute(query, template_id))

    async def schedule_paused(self, template_id: str) -> bool:
        """Whether the schedule of `template_id` is paused for every engine of the store."""
        query = f"SELECT 1 FROM {self.sql.schema}.schedule_pauses WHERE template_id = $1"
        return bool(await self._loop_link().call(lambda c: c.fetchval(query, template_id)))

    def flow_queue(self, template_id: str | None = None) -> list[QueueRow]:
        """The queued executions (of one template, or all), in the order they would start once due."""
        statement = queue_query(f"{self.sql.schema}.executions", template_id)

        async def op(conn: asyncpg.Connection) -> list[QueueRow]:
            return [QueueRow(*r) for r in await _run_statement(conn, statement)]

        return self._run(self._reader.call(op))

    def flow_templates(self) -> list[str]:
        """The templates with queued executions."""
        query = f"SELECT DISTINCT template_id FROM {self.sql.schema}.executions WHERE state = '{QUEUED}'"
        return [r[0] for r in self._run(self._reader.call(lambda c: c.fetch(query)))]

    def flow_cancel(self, exec_ids: Iterable[str]) -> list[str]:
        """Record these executions of this node as cancelled if they have not started; return those cancelled."""
        node = self._attached()
        ids = list(exec_ids)
        if not ids:
            return []
        query = (
            f"UPDATE {self.sql.schema}.executions SET state = 'cancelled', ended = $3, launch = 0, locked = false "
            f"WHERE exec_id = ANY($1) AND owner = $2 AND (state = '{QUEUED}' OR (state = 'pending' AND launch = 1)) "
            "RETURNING exec_id"
        )
        ended = iso_now()
        return [r[0] for r in self._run(self._reader.call(lambda c: c.fetch(query, ids, node, ended)))]

    def flow_ended(self, exec_ids: Sequence[str]) -> list[str]:
        """Those of `exec_ids` that ended without starting (cancelled while queued, by an operator say)."""
        statement = ended_query(f"{self.sql.schema}.executions", exec_ids, arrays=True)

        async def op(conn: asyncpg.Connection) -> list[str]:
            return [r[0] for r in await _run_statement(conn, statement)]

        return self._run(self._reader.call(op))

    def flow_listen(self, wake: Callable[[], None]) -> bool:
        """Call `wake` (from the store's thread) when another node admits this node's queued executions.

        `wake` is called too when the listening connection is lost: listen again then.

        Returns:
            True when listening (again); False when already listening.
        """
        return self._listen_on(self.flow_channel, wake, "flow", lost_too=True)


async def drive_on(conn: asyncpg.Connection, gen: Generator[Statement, list[tuple[Any, ...]], _T]) -> _T:
    """Run `gen` (a step of `tukio.store._flowsql` or `tukio.store._ownsql`) on `conn`."""
    try:
        statement = next(gen)
        while True:
            statement = gen.send(await _run_statement(conn, statement))
    except StopIteration as stop:
        result: _T = stop.value
        return result


def blob(value: str | bytes | None) -> tuple[bytes | None, bool]:
    """A text or bytes column as PostgreSQL keeps it: the bytes, and whether they were text."""
    if value is None:
        return None, True
    return (value.encode(), True) if isinstance(value, str) else (value, False)
