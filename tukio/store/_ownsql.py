"""The ownership protocol of the nodes sharing a journal, written once for the SQL stores (sans I/O).

Each step of the protocol (join, heartbeat, claim, the cancel requests of
'abort-running', what a node owns or lost, leaving) is a generator here: it
yields `Statement` objects with ``?`` placeholders and receives each one's
rows. A store runs a step inside one transaction of its own (SQLite: the
file's write lock; PostgreSQL: a transaction on one of its connections) and
returns what the generator returns. What differs between the databases is
an `Owning`: table names, the clock, the liveness of a node, row locks.

A node is *alive* while its lease runs, on the clock every node reads alike
(see `tukio.store._lease`); SQLite adds that a process holds the node's lock
file (a crashed process is dead at once). Both are SQL conditions on the
``nodes`` row ``n``: SQLite's connections have the functions
``tukio_clock()`` and ``tukio_held(name)`` (see `sqlite_functions`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tukio.store._flowsql import Statement
from tukio.store._gate import Running
from tukio.store.base import QUEUED, UNFINISHED, execution_info

if TYPE_CHECKING:
    import sqlite3

    from tukio.store.base import ExecutionInfo

__all__ = [
    "COLUMNS",
    "POSTGRES_OWNING",
    "SQLITE_OWNING",
    "Owning",
    "Step",
    "cancel_requests",
    "claim",
    "heartbeat",
    "join",
    "leave",
    "live",
    "lost",
    "mark_cancelled",
    "owned",
    "pending_cancels",
    "running",
    "sqlite_functions",
    "stranded",
    "unfinished_among",
    "unlock",
]

#: The columns an `ExecutionInfo` is read from.
COLUMNS = "exec_id, template_id, state, started, ended, error, version"
#: How many ids one statement takes at most where ids are spelled one by one (SQLite).
_CHUNK = 500

Rows = list[tuple[Any, ...]]
#: A step of the protocol: statements out, rows in, its result at the end.
Step = Generator[Statement, Rows, Any]


@dataclass(frozen=True)
class Owning:
    """How one database spells the ownership protocol.

    Args:
        prefix: put before table names (a schema and a dot, or nothing).
        now: the time on the clock of the leases.
        later: that time plus ``?`` seconds.
        alive: the condition that the node of row ``n`` (of ``nodes``) is alive.
        arrays: ids go as one array parameter (``= ANY(?)``), else one by one.
        same: the null-safe equality operator.
        skip_locked: locks the rows a claim reads, passing over those another claim holds.
        lock_rows: locks the executions a step reads (of the table named ``x``).
        lock_row: locks the one row a step reads.
        returning: an update can return the row as it was (through a ``WITH``
            of it): a heartbeat is then one statement.
    """

    prefix: str
    now: str
    later: str
    alive: str
    arrays: bool
    same: str
    skip_locked: str = ""
    lock_rows: str = ""
    lock_row: str = ""
    returning: bool = False

    def sql(self, text: str) -> str:
        """`text` with ``{p}`` (the prefix), ``{now}``, ``{later}``, ``{alive}`` and ``{same}`` spelled out."""
        return text.format(
            p=self.prefix,
            now=self.now,
            later=self.later,
            alive=f"SELECT n.name FROM {self.prefix}nodes AS n WHERE {self.alive}",
            same=self.same,
            skip_locked=self.skip_locked,
            lock_rows=self.lock_rows,
            lock_row=self.lock_row,
        )

    def one_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """The condition that `column` is one of `values` (a few: template ids, versions), with its parameters."""
        if self.arrays:
            return f"{column} = ANY(?)", [list(values)]
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)

    def among(self, column: str, ids: Sequence[Any]) -> list[tuple[str, list[Any]]]:
        """Conditions that `column` is one of `ids`, with their parameters: one, or one per chunk."""
        if self.arrays:
            return [(f"{column} = ANY(?)", [list(ids)])]
        return [
            (f"{column} IN ({', '.join('?' * len(ids[at : at + _CHUNK]))})", list(ids[at : at + _CHUNK]))
            for at in range(0, len(ids), _CHUNK)
        ]


SQLITE_OWNING = Owning(
    prefix="",
    now="tukio_clock()",
    later="tukio_clock() + ?",
    alive="n.expires >= tukio_clock() AND tukio_held(n.name)",
    arrays=False,
    same="IS",
)


def POSTGRES_OWNING(schema: str) -> Owning:
    """The spelling of a PostgreSQL schema (already quoted): leases on the server's clock."""
    return Owning(
        prefix=f"{schema}.",
        now="now()",
        later="now() + make_interval(secs => ?)",
        alive="n.expires >= now()",
        arrays=True,
        same="IS NOT DISTINCT FROM",
        skip_locked=" FOR UPDATE SKIP LOCKED",
        lock_rows=" FOR UPDATE OF x",
        lock_row=" FOR UPDATE",
        returning=True,
    )


def sqlite_functions(db: sqlite3.Connection, clock: Callable[[], float], held: Callable[[str], bool]) -> None:
    """Give an SQLite connection the functions `SQLITE_OWNING` uses: the lease clock and lock files."""
    db.create_function("tukio_clock", 0, lambda: clock())
    db.create_function("tukio_held", 1, lambda name: int(held(name)))


def _infos(rows: Rows) -> list[ExecutionInfo]:
    return [execution_info(*row[:7]) for row in rows]


# -- joining, leases -----------------------------------------------------------------------------
def join(o: Owning, node: str, lease: float, ephemeral: bool) -> Step:
    """Start a new epoch of `node` and take its unfinished (and queued) executions back: the epoch and their count."""
    yield Statement(
        o.sql(
            "INSERT INTO {p}nodes (name, epoch, lease, beat, expires, ephemeral) VALUES (?, 1, ?, {now}, {later}, ?) "
            "ON CONFLICT (name) DO UPDATE SET epoch = {p}nodes.epoch + 1, lease = excluded.lease, "
            "beat = excluded.beat, expires = excluded.expires, ephemeral = excluded.ephemeral"
        ),
        (node, lease, lease, ephemeral),
    )
    [(epoch,)] = yield Statement(o.sql("SELECT epoch FROM {p}nodes WHERE name = ?"), (node,))
    yield Statement(
        o.sql("UPDATE {p}executions SET epoch = ? WHERE owner = ? AND state IN (?, ?)"),
        (epoch, node, UNFINISHED, QUEUED),
    )
    [(taken,)] = yield Statement(
        o.sql("SELECT count(*) FROM {p}executions WHERE owner = ? AND state = ?"), (node, UNFINISHED)
    )
    return int(epoch), int(taken)


def heartbeat(o: Owning, node: str, epoch: int, lease: float) -> Step:
    """Renew the lease of `node` (under `epoch`): "alive", "late" (it had expired) or "replaced".

    Where the database returns the row as it was (PostgreSQL), one
    statement: a renewal is one round trip, however slow the network.
    """
    if o.returning:
        found = yield Statement(
            o.sql(
                "WITH was AS (SELECT expires FROM {p}nodes WHERE name = ? AND epoch = ?{lock_row}) "
                "UPDATE {p}nodes AS n SET beat = {now}, expires = {later} FROM was "
                "WHERE n.name = ? AND n.epoch = ? RETURNING was.expires >= {now}"
            ),
            (node, epoch, lease, node, epoch),
        )
    else:
        found = yield Statement(
            o.sql("SELECT n.expires >= {now} FROM {p}nodes AS n WHERE n.name = ? AND n.epoch = ?"), (node, epoch)
        )
        if found:
            yield Statement(o.sql("UPDATE {p}nodes SET beat = {now}, expires = {later} WHERE name = ?"), (lease, node))
    if not found:
        return "replaced"
    state: Literal["alive", "late"] = "alive" if found[0][0] else "late"
    return state


def leave(o: Owning, node: str, epoch: int) -> Step:
    """End the lease of `node` now: its executions are taken over at once."""
    yield Statement(o.sql("UPDATE {p}nodes SET expires = {later} WHERE name = ? AND epoch = ?"), (-1.0, node, epoch))


def live(o: Owning, names: Sequence[str]) -> Step:
    """Those of the nodes `names` that are alive."""
    found: set[str] = set()
    for condition, params in o.among("n.name", names):
        rows = yield Statement(o.sql("{alive} AND ") + condition, params)
        found.update(r[0] for r in rows)
    return found


# -- what a node owns ----------------------------------------------------------------------------
def owned(o: Owning, node: str, epoch: int) -> Step:
    """The unfinished executions `node` owns under `epoch`, oldest first."""
    rows = yield Statement(
        o.sql(
            f"SELECT {COLUMNS} FROM {{p}}executions WHERE owner = ? AND epoch = ? AND state = ? "
            "ORDER BY started, exec_id"
        ),
        (node, epoch, UNFINISHED),
    )
    return _infos(rows)


def _among(o: Owning, head: str, ids: Sequence[str], tail: str, params: Sequence[Any]) -> Step:
    """The exec ids a query selects: `head`, the condition that ``exec_id`` is one of `ids`, `tail` (with `params`)."""
    found: list[str] = []
    for condition, chunk in o.among("exec_id", ids):
        rows = yield Statement(o.sql(head) + condition + o.sql(tail), [*chunk, *params])
        found += [r[0] for r in rows]
    return found


def lost(o: Owning, node: str, epoch: int, exec_ids: Sequence[str]) -> Step:
    """Those of `exec_ids` that `node` no longer owns under `epoch`."""
    tail = " AND NOT (owner {same} ? AND epoch {same} ?)"
    return (yield from _among(o, "SELECT exec_id FROM {p}executions WHERE ", exec_ids, tail, (node, epoch)))


def unfinished_among(o: Owning, exec_ids: Sequence[str]) -> Step:
    """Those of `exec_ids` that have not ended (on any node)."""
    return (yield from _among(o, "SELECT exec_id FROM {p}executions WHERE ", exec_ids, " AND state = ?", (UNFINISHED,)))


def mark_cancelled(o: Owning, node: str, epoch: int, exec_ids: Sequence[str], ended: str | None) -> Step:
    """Record the unfinished executions `exec_ids` of `node` (under `epoch`) as cancelled."""
    for condition, chunk in o.among("exec_id", exec_ids):
        yield Statement(
            o.sql("UPDATE {p}executions SET state = 'cancelled', ended = ?, locked = ? ")
            + f"WHERE {condition} AND owner = ? AND epoch = ? AND state = ?",
            [ended, False, *chunk, node, epoch, UNFINISHED],
        )


def unlock(o: Owning, node: str, epoch: int, exec_ids: Sequence[str]) -> Step:
    """Record that the executions `exec_ids` of `node` unlocked ('skip-until-unlock' no longer skips for them)."""
    for condition, chunk in o.among("exec_id", exec_ids):
        yield Statement(
            o.sql("UPDATE {p}executions SET locked = ? ") + f"WHERE {condition} AND owner = ? AND epoch = ?",
            [False, *chunk, node, epoch],
        )


# -- taking over dead nodes' work ----------------------------------------------------------------
def _runnable(o: Owning, template_ids: Sequence[str], versions: Collection[str] | None) -> tuple[str, list[Any]]:
    """The condition that an execution ``x`` is of `template_ids` (and of `versions`, or of no version)."""
    templates, params = o.one_of("x.template_id", sorted(set(template_ids)))
    if versions is None:
        return templates, params
    version, more = o.one_of("x.version", sorted(versions))
    return f"{templates} AND (x.version IS NULL OR {version})", [*params, *more]


def claim(
    o: Owning,
    node: str,
    epoch: int,
    template_ids: Sequence[str],
    limit: int,
    versions: Collection[str] | None,
    *,
    probe: bool = False,
) -> Step:
    """Take over unfinished executions of dead nodes (or of no node), at most `limit`, oldest first.

    Those of `template_ids` (and of `versions`, when given, or of no
    version) only; an execution someone asked to cancel is never taken (see
    `tukio.store._gate`). Each is taken by one node only: the step holds
    the write lock (SQLite) or locks the rows it takes (PostgreSQL). With
    `probe`, nothing is taken: whether there is anything to take (a read,
    under no lock).
    """
    runnable, params = _runnable(o, template_ids, versions)
    rows = yield Statement(
        o.sql(
            f"SELECT {COLUMNS} FROM {{p}}executions AS x WHERE x.state = ? AND {runnable} "
            "AND (x.owner IS NULL OR (x.owner <> ? AND x.owner NOT IN ({alive}))) "
            "AND NOT EXISTS (SELECT 1 FROM {p}cancels AS c WHERE c.exec_id = x.exec_id) "
            "ORDER BY x.started, x.exec_id LIMIT ?" + ("" if probe else "{skip_locked}")
        ),
        [UNFINISHED, *params, node, 1 if probe else limit],
    )
    if probe:
        return bool(rows)
    for condition, chunk in o.among("exec_id", [r[0] for r in rows]):
        yield Statement(
            o.sql("UPDATE {p}executions SET owner = ?, epoch = ? WHERE ") + condition, [node, epoch, *chunk]
        )
    return _infos(rows)


def stranded(o: Owning, template_ids: Sequence[str], versions: Collection[str] | None) -> Step:
    """The unfinished executions of dead nodes (or of no node) that `claim` leaves alone, oldest first."""
    runnable, params = _runnable(o, template_ids, versions)
    rows = yield Statement(
        o.sql(
            f"SELECT {COLUMNS} FROM {{p}}executions AS x WHERE x.state = ? "
            f"AND NOT (x.template_id IS NOT NULL AND {runnable}) "
            "AND (x.owner IS NULL OR x.owner NOT IN ({alive})) ORDER BY x.started, x.exec_id"
        ),
        [UNFINISHED, *params],
    )
    return _infos(rows)


# -- cancel requests of 'abort-running' ------------------------------------------------------------
def pending_cancels(o: Owning) -> Step:
    """Whether any cancel request is kept (every heartbeat asks: almost always none)."""
    rows = yield Statement(o.sql("SELECT 1 FROM {p}cancels LIMIT 1"), ())
    return bool(rows)


def cancel_requests(o: Owning, node: str, epoch: int, ended: str | None) -> Step:
    """Act on the cancel requests no live node will; return those for `node` (under `epoch`).

    Requests for executions that ended are dropped; unfinished executions
    of dead nodes (or of no node) someone asked to cancel are recorded
    cancelled, owned by `node` (a zombie of their dead owner is fenced).
    """
    rows = yield Statement(
        o.sql(
            "SELECT x.exec_id, x.owner {same} ? AND x.epoch {same} ?, "
            "x.owner IS NOT NULL AND (x.owner = ? OR x.owner IN ({alive})) "
            "FROM {p}cancels AS c JOIN {p}executions AS x ON x.exec_id = c.exec_id "
            "WHERE x.state = ? ORDER BY x.exec_id{lock_rows}"
        ),
        (node, epoch, node, UNFINISHED),
    )
    settled = [r[0] for r in rows if not r[2]]
    for condition, chunk in o.among("exec_id", settled):
        yield Statement(
            o.sql("UPDATE {p}executions SET state = 'cancelled', ended = ?, locked = ?, owner = ?, epoch = ? WHERE ")
            + condition,
            [ended, False, node, epoch, *chunk],
        )
    yield Statement(
        o.sql(
            "DELETE FROM {p}cancels WHERE NOT EXISTS (SELECT 1 FROM {p}executions AS x "
            "WHERE x.exec_id = {p}cancels.exec_id AND x.state = ?)"
        ),
        (UNFINISHED,),
    )
    return [r[0] for r in rows if r[1]], len(settled)


# -- overrun policies across the nodes (see `tukio.store._gate`) -------------------------------------
def running(o: Owning, node: str, epoch: int, template_id: str | None) -> Step:
    """The unfinished executions of `template_id` as the overrun rule sees them; None when `node` was replaced.

    Run inside the admission's transaction, under the store's lock of the
    template (SQLite: the write lock).
    """
    me = yield Statement(o.sql("SELECT 1 FROM {p}nodes WHERE name = ? AND epoch = ?"), (node, epoch))
    if not me:
        return None
    rows = yield Statement(
        o.sql(
            "SELECT x.exec_id, x.locked, x.owner {same} ? AND x.epoch {same} ?, "
            "x.owner IS NOT NULL AND (x.owner = ? OR x.owner IN ({alive})) "
            "FROM {p}executions AS x WHERE x.state = ? AND x.template_id = ?{lock_rows}"
        ),
        (node, epoch, node, UNFINISHED, template_id),
    )
    return [Running(r[0], bool(r[1]), bool(r[2]), bool(r[3])) for r in rows]
