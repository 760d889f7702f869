"""The durable queue of flow control, written once for the SQL stores (sans I/O).

A governed trigger is a row of ``executions`` in state ``queued`` (its begin
record: template version, data) with its priority, its partition (the JSON
text of its ``concurrency_key`` value, ``''`` for none), its due time and
the time it was queued. `step` is one transaction of a template's queue:
it inserts a node's new rows (those whose id the store already holds are
*known*: an idempotency key seen before), then admits queued rows in order
(priority, then arrival), as many as the template's concurrency slots
(unfinished executions, per partition) and its rate (starts in the last
period) allow, whoever queued them, and hands back this node's admitted
rows to launch. An admitted row is ``pending`` (it holds a slot from then
on) with ``launch = 1`` until its owner launches it.

The generator yields `Statement` objects and receives each one's rows; each
store runs it inside its own transaction, holding its own lock of the
template (SQLite: the write lock; PostgreSQL: an advisory lock) and giving
the time on its clock (the server's for PostgreSQL). Placeholders are
``?``; the PostgreSQL store numbers them.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from tukio.store.base import QUEUED

if TYPE_CHECKING:
    from tukio.store.base import ExecutionInfo, Serializer

__all__ = [
    "QUEUED",
    "QUEUE_COLUMNS",
    "FlowRow",
    "FlowStore",
    "Limits",
    "QueueRow",
    "Statement",
    "StepResult",
    "drive",
    "ended_query",
    "launches",
    "queue_query",
    "step",
]

_R = TypeVar("_R")

#: Rows read per query while admitting (a larger backlog is read in several).
_PAGE = 500


@dataclass(frozen=True)
class Statement:
    """One SQL statement to run; `many`: run it once per item of `params`."""

    sql: str
    params: Sequence[Any]
    many: bool = False


@dataclass(frozen=True)
class Limits:
    """A template's limits: `concurrency` slots (per partition when `partitioned`), `rate` (starts, seconds)."""

    concurrency: int | None = None
    partitioned: bool = False
    rate: tuple[int, float] | None = None


@dataclass
class StepResult:
    """What a step did: the rows not inserted (`known`: their places), this node's to `launch`, when to step again."""

    known: list[int] = field(default_factory=list)
    launch: list[str] = field(default_factory=list)
    others: bool = False
    wake: float | None = None


def _in(column: str, values: Sequence[Any], arrays: bool, negate: bool = False) -> tuple[str, list[Any]]:
    """``column IN (values)`` (or NOT IN) and its parameters, as the store spells it.

    `arrays` (PostgreSQL): one array parameter, so the statement's text does
    not change with the number of values (one prepared statement); else
    one mark per value.
    """
    if arrays:
        return (f"{column} <> ALL(?)" if negate else f"{column} = ANY(?)"), [list(values)]
    marks = ", ".join("?" * len(values))
    return f"{column} {'NOT IN' if negate else 'IN'} ({marks})", list(values)


def step(
    table: str,
    template_id: str,
    owner: tuple[str, int],
    now: float,
    limits: Limits,
    insert: Statement | None = None,
    new_ids: Sequence[str | None] = (),
    look_due: bool = True,
    arrays: bool = False,
    lock: Statement | None = None,
    admit: Statement | None = None,
) -> Generator[Statement, list[tuple[Any, ...]], StepResult]:
    """One transaction of `template_id`'s queue, as this node `owner` (name, epoch) sees it at `now`.

    Args:
        table: the executions table (qualified by its schema where needed).
        insert: the insertion of this node's new rows (``many``), whose ids are
            `new_ids` (None for an id just made: no need to look for it).
        look_due: read when the next delayed row is due (`StepResult.wake`).
        arrays: pass lists of values as one array (PostgreSQL).
        lock: the statement that takes the template's lock, once the new rows
            are inserted (inserts of several nodes need not take turns); its
            first row ends with the time then. None: the transaction holds
            the lock already (SQLite).
        admit: the store's own statement for the admission (its first row
            holds the ids of this node's rows admitted), in place of `_admit`:
            PostgreSQL's ``flow_admit`` for a template with no concurrency key
            and no rate, when `look_due` is False.

    Returns:
        The places in `new_ids` of the rows not inserted (the store held
        their id, or an earlier row of the batch had it), the rows of this
        node admitted now (``pending`` from now: launch them), whether rows
        of other nodes were admitted (``launch = 1``: tell them, see
        `launches`), and when a due time or the rate lets more start (None:
        when a slot frees).
    """
    result = StepResult()
    if insert is not None and new_ids:
        known: set[str] = set()
        keyed = [i for i in new_ids if i is not None]
        for start in range(0, len(keyed), _PAGE):
            chunk = keyed[start : start + _PAGE]
            where, params = _in("exec_id", chunk, arrays)
            rows = yield Statement(f"SELECT exec_id FROM {table} WHERE {where}", params)
            known.update(r[0] for r in rows)
        fresh = []
        for n, (params, exec_id) in enumerate(zip(insert.params, new_ids, strict=True)):
            if exec_id is None:
                fresh.append(params)
            elif exec_id in known:  # held already, or twice in this batch (one key triggered twice at once)
                result.known.append(n)
            else:
                known.add(exec_id)
                fresh.append(params)
        if fresh:
            yield Statement(insert.sql, fresh, many=True)
    if admit is not None:
        rows = yield admit
        result.launch = list(rows[0][0])
        return result
    if lock is not None:
        rows = yield lock
        now = rows[0][-1]
    admitted = yield from _admit(table, template_id, owner, now, limits, result, arrays)
    result.launch = [exec_id for exec_id, node, epoch in admitted if (node, epoch) == owner]
    result.others = len(result.launch) < len(admitted)
    if not look_due:
        return result
    rows = yield Statement(
        f"SELECT min(due) FROM {table} WHERE template_id = ? AND state = '{QUEUED}' AND due > ?", (template_id, now)
    )
    due = rows[0][0] if rows else None
    if due is not None:
        result.wake = due if result.wake is None else min(result.wake, due)
    return result


def launches(
    table: str, owner: tuple[str, int], arrays: bool = False, returning: bool = False
) -> Generator[Statement, list[tuple[Any, ...]], list[tuple[str, str]]]:
    """Take the rows of `owner` that other nodes admitted (no lock of a template needed).

    `returning`: the store's UPDATE returns rows (PostgreSQL): one statement.

    Returns:
        (execution id, template id) of each, to launch.
    """
    if returning:
        rows = yield Statement(
            f"UPDATE {table} SET launch = 0 WHERE launch = 1 AND owner = ? AND epoch = ? "
            "RETURNING exec_id, template_id",
            owner,
        )
        return [(r[0], r[1]) for r in rows]
    rows = yield Statement(
        f"SELECT exec_id, template_id FROM {table} WHERE launch = 1 AND owner = ? AND epoch = ?", owner
    )
    if rows:
        where, params = _in("exec_id", [r[0] for r in rows], arrays)
        yield Statement(f"UPDATE {table} SET launch = 0 WHERE launch = 1 AND {where}", params)
    return [(r[0], r[1]) for r in rows]


def _admit(
    table: str,
    template_id: str,
    owner: tuple[str, int],
    now: float,
    limits: Limits,
    result: StepResult,
    arrays: bool,
) -> Generator[Statement, list[tuple[Any, ...]], list[tuple[str, str, int]]]:
    """Admit queued rows of the template in order while slots and rate allow; return (id, owner, epoch) of each."""
    left: int | None = None  # starts the rate still allows
    if limits.rate is not None:
        most, period = limits.rate
        rows = yield Statement(
            f"SELECT count(*), min(admitted) FROM {table} WHERE template_id = ? AND admitted > ?",
            (template_id, now - period),
        )
        left = most - rows[0][0]
        if left <= 0:
            result.wake = rows[0][1] + period
            return []
    running: dict[str, int] = {}
    full: set[str] = set()
    limit = limits.concurrency
    if limit is not None:
        by_part = "coalesce(part, '')" if limits.partitioned else "''"  # (one count without a key)
        rows = yield Statement(
            f"SELECT {by_part}, count(*) FROM {table} WHERE template_id = ? AND state = 'pending' GROUP BY 1",
            (template_id,),
        )
        running = dict(rows)
        full = {part for part, count in running.items() if count >= limit}
        if full and not limits.partitioned:
            return []
    admitted: list[tuple[str, str, int]] = []
    while left is None or left > 0:
        skip, skipped = _in("part", sorted(full), arrays, negate=True) if full else ("", [])
        page = _PAGE
        if not limits.partitioned:  # read no more rows than may start
            if limit is not None:
                page = min(page, limit - running.get("", 0))
            if left is not None:
                page = min(page, left)
        rows = yield Statement(
            f"SELECT exec_id, part, owner, epoch FROM {table} WHERE template_id = ? AND state = '{QUEUED}' "
            f"AND (due IS NULL OR due <= ?){' AND ' + skip if skip else ''} "
            "ORDER BY priority DESC, queued_at, exec_id LIMIT ?",
            (template_id, now, *skipped, page),
        )
        taken: list[str] = []
        for exec_id, row_part, node, epoch in rows:
            part = row_part if limits.partitioned else ""
            if part in full:
                continue
            taken.append(exec_id)
            admitted.append((exec_id, node, epoch))
            if left is not None:
                left -= 1
                if left == 0:
                    break
            if limit is not None:
                running[part] = running.get(part, 0) + 1
                if running[part] >= limit:
                    full.add(part)
                    if not limits.partitioned:
                        break
        if taken:
            where, params = _in("exec_id", taken, arrays)
            yield Statement(  # this node launches its own rows at once; the others are told
                f"UPDATE {table} SET state = 'pending', admitted = ?, "
                f"launch = CASE WHEN owner = ? AND epoch = ? THEN 0 ELSE 1 END WHERE {where}",
                (now, *owner, *params),
            )
        if len(rows) < page or (full and not limits.partitioned):
            break
    if left == 0 and limits.rate is not None:
        result.wake = now + limits.rate[1]  # at the latest; the next step reads the exact time
    return admitted


@dataclass(frozen=True)
class FlowRow:
    """A trigger to queue: its begin record, priority, partition (JSON text, '' for none) and due time.

    `keyed`: its id may be in the store already (an idempotency key); else it is new.
    """

    begin: Any  # tukio.store.base.ExecutionRecord
    priority: int = 0
    part: str = ""
    due: float | None = None
    keyed: bool = True


@dataclass(frozen=True)
class QueueRow:
    """A queued execution as the store holds it (listings, and a node taking its own back)."""

    exec_id: str
    template_id: str
    version: str | None
    priority: int
    part: str
    due: float | None
    queued_at: float
    owner: str | None


#: The columns of `QueueRow`, in order.
QUEUE_COLUMNS = "exec_id, template_id, version, priority, coalesce(part, ''), due, queued_at, owner"


def ended_query(table: str, exec_ids: Sequence[str], arrays: bool = False) -> Statement:
    """Those of `exec_ids` that ended without starting (cancelled while queued, by an operator say)."""
    where, params = _in("exec_id", exec_ids, arrays)
    return Statement(
        f"SELECT exec_id FROM {table} WHERE {where} AND state <> '{QUEUED}' AND state <> 'pending'", params
    )


def queue_query(table: str, template_id: str | None, owner: str | None = None) -> Statement:
    """The queued rows (of a template, of an owner), in the order they would start once due."""
    clauses = [f"state = '{QUEUED}'"]
    params: list[Any] = []
    if template_id is not None:
        clauses.append("template_id = ?")
        params.append(template_id)
    if owner is not None:
        clauses.append("owner = ?")
        params.append(owner)
    return Statement(
        f"SELECT {QUEUE_COLUMNS} FROM {table} WHERE {' AND '.join(clauses)} "
        "ORDER BY template_id, priority DESC, queued_at, exec_id",
        params,
    )


def drive(
    gen: Generator[Statement, list[tuple[Any, ...]], _R], run: Callable[[Statement], list[tuple[Any, ...]]]
) -> _R:
    """Run `gen` (a step, `launches`) through `run(statement) -> rows` (synchronous stores)."""
    try:
        statement = next(gen)
        while True:
            statement = gen.send(run(statement))
    except StopIteration as stop:
        result: _R = stop.value
        return result


@runtime_checkable
class FlowStore(Protocol):
    """What a store offers to hold the durable queue of flow control (`SQLiteStore`, `PostgresStore`).

    `flow_poll`: None when the store tells a node that another admitted its
    rows (`flow_listen`); else the seconds between two looks.
    """

    flow_poll: float | None
    serializer: Serializer

    async def flow_step(
        self, template_id: str, limits: Limits, rows: Sequence[FlowRow] = (), look_due: bool = True
    ) -> StepResult:
        """Queue `rows` (this node's new triggers of `template_id`) and admit what may start, in one transaction."""

    async def flow_launches(self) -> list[tuple[str, str]]:
        """Take this node's rows that other nodes admitted: (execution id, template id) of each, to launch."""

    async def flow_release(self) -> None:
        """Free what the running loop's flow control holds in the store (its engine stops)."""

    async def pause_schedule(self, template_id: str, paused: bool) -> None:
        """Pause (or resume) the schedule of `template_id` for every engine of the store."""

    async def schedule_paused(self, template_id: str) -> bool:
        """Whether the schedule of `template_id` is paused for every engine of the store."""

    def flow_queue(self, template_id: str | None = None) -> list[QueueRow]:
        """The queued executions (of one template, or all), in the order they would start once due."""

    def flow_templates(self) -> list[str]:
        """The templates with queued executions."""

    def flow_cancel(self, exec_ids: Iterable[str]) -> list[str]:
        """Record these executions of this node as cancelled if they have not started; return those cancelled."""

    def flow_ended(self, exec_ids: Sequence[str]) -> list[str]:
        """Those of `exec_ids` that ended without starting (cancelled while queued, by an operator say)."""

    def flow_listen(self, wake: Callable[[], None]) -> bool:
        """Call `wake` when another node admits this node's rows (False: the store cannot; poll)."""

    def mark_cancelled(self, exec_ids: Iterable[str]) -> None:
        """Record these unfinished executions of this node as cancelled (they will not run)."""

    def owned(self) -> list[ExecutionInfo]:
        """The unfinished executions the node owns."""
