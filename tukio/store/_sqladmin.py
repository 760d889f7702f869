"""The queries and actions of `tukio.manage` for the stores that keep their journal in SQL.

One `SQLAdmin` serves SQLite and PostgreSQL: the statements are written once
with ``?`` placeholders and ``{p}`` for the tables' schema prefix, and a
`Dialect` turns them into each database's form. The store hands its admin a
`Runner`: how to read, how to run a few statements in one transaction, and
which nodes are alive.

Every write is guarded in its own statement (``WHERE state = ... AND owner
IS ...``), so that an action racing with an engine (a claim, an end) changes
nothing rather than something stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tukio.store._admin import FAILED_STATES, Admin, Filters, NodeRow, Row, now

__all__ = ["POSTGRES", "SCAN_WINDOW", "SQLITE", "VERSION_COLUMN", "Dialect", "Runner", "SQLAdmin"]

#: The executions' column holding the template version (see `WorkflowTemplate.version`).
VERSION_COLUMN = "x.version"

# The sort key of a listing (newest first): the start time, then the id.
_KEY = "coalesce(x.started, '')"
# The first failing task of an execution ("task_id: error"), for the ERROR column.
_TASK_ERROR = (
    "(SELECT t.task_id || ': ' || coalesce(t.error, t.state) FROM {p}tasks AS t "
    "WHERE t.exec_id = x.exec_id AND t.state IN ('exception', 'timeout') ORDER BY t.ended LIMIT 1)"
)
_SUMMARY = (
    f"SELECT x.exec_id, x.template_id, {VERSION_COLUMN}, x.state, x.owner, x.started, x.ended, x.error, "
    f"{_TASK_ERROR} FROM {{p}}executions AS x"
)
# The executions by state (the state column is indexed for the listings).
_BY_STATE = "SELECT state, count(*) FROM {p}executions GROUP BY state"
# The order of listings: newest first.
_ORDER = f"ORDER BY {_KEY} DESC, x.exec_id DESC"
#: How many of the newest executions a listing of failures reads first (see `SQLAdmin.page`).
SCAN_WINDOW = 5000
# The executions with a failed task (spelled as the partial index ``tasks_failed`` is, so that it serves).
_FAILED_TASKS = "SELECT t.exec_id FROM {p}tasks AS t WHERE t.state IN ('exception', 'timeout')"
# Whether one execution has a failed task (one probe of the tasks' primary key).
_A_TASK_FAILED = "EXISTS (SELECT 1 FROM {p}tasks AS t WHERE t.exec_id = x.exec_id AND t.state IN ({states}))"


def _literals(states: Iterable[str]) -> str:
    """Those of `states` that are `FAILED_STATES`, as SQL literals ('' when none; constants, not input)."""
    return ", ".join(f"'{s}'" for s in FAILED_STATES if s in states)


_HAS_FAILED = (
    f"(x.state IN ('exception', 'timeout') OR {_A_TASK_FAILED.format(p='{p}', states=_literals(FAILED_STATES))})"
)


def _split(filters: Filters) -> tuple[tuple[str, ...], str] | None:
    """For a listing of failures alone, the states of the executions and the condition on their tasks.

    None when the filters are not that: `failed=True`, or states some of
    which are `FAILED_STATES`, without the other.
    """
    if filters.failed is True and filters.states is None:
        return FAILED_STATES, ""
    if filters.failed is None and filters.states is not None:
        failures = _literals(filters.states)
        if failures:
            return filters.states, f" AND t.state IN ({failures})"
    return None


@dataclass(frozen=True)
class Dialect:
    """How one database spells what `SQLAdmin` says.

    Args:
        prefix: put before table names (a schema and a dot, or nothing).
        same: the null-safe equality operator.
        numbered: placeholders are ``$1, $2...`` instead of ``?``.
        clock: the current time as the ``cancels`` table keeps it.
    """

    prefix: str
    same: str
    numbered: bool
    clock: str

    def sql(self, text: str) -> str:
        """`text` with the prefix in and its placeholders in this dialect's form."""
        text = text.replace("{p}", self.prefix).replace(" IS ?", f" {self.same} ?")
        if not self.numbered:
            return text
        parts = text.split("?")
        return "".join(part + (f"${n}" if n < len(parts) else "") for n, part in enumerate(parts, 1))

    def among(self, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        """A condition that `column` is one of `values`, with its parameters."""
        if self.numbered:
            return f"{column} = ANY(?)", [list(values)]
        if not values:
            return "0", []
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)


SQLITE = Dialect(prefix="", same="IS", numbered=False, clock="(julianday('now') - 2440587.5) * 86400.0")


def POSTGRES(schema: str) -> Dialect:
    """The dialect of a PostgreSQL schema (already quoted)."""
    return Dialect(prefix=f"{schema}.", same="IS NOT DISTINCT FROM", numbered=True, clock="now()")


Statement = tuple[str, Sequence[Any]]


@dataclass(frozen=True)
class Runner:
    """How `SQLAdmin` reaches a store's database (the store's own connections).

    Args:
        fetch: runs one query, returns its rows as tuples.
        execute: runs statements in one transaction, returns each one's row count.
        live: the names of the nodes alive now among those given.
        nodes: every node as ``(name, epoch, expires in seconds since the epoch)``.
        signal: a statement that wakes the nodes up to read cancel requests
            at once (PostgreSQL's NOTIFY), or None.
    """

    fetch: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
    execute: Callable[[Sequence[Statement]], list[int]]
    live: Callable[[Iterable[str]], set[str]]
    nodes: Callable[[], list[tuple[str, int, float]]]
    signal: str | None = None


class SQLAdmin(Admin):
    """`Admin` over SQL, for `SQLiteStore` and `PostgresStore`.

    Args:
        dialect: how the database spells things.
        runner: the store's connections.
    """

    def __init__(self, dialect: Dialect, runner: Runner) -> None:
        self.dialect = dialect
        self.runner = runner

    def _fetch(self, text: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.runner.fetch(self.dialect.sql(text), params)

    def _execute(self, statements: Sequence[Statement]) -> list[int]:
        return self.runner.execute([(self.dialect.sql(text), params) for text, params in statements])

    def _where(self, filters: Filters, after: tuple[str, str] | None = None) -> tuple[list[str], list[Any]]:
        """The conditions of `filters` (and of the keyset `after`), with their parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if after is not None:
            clauses.append(f"({_KEY} < ? OR ({_KEY} = ? AND x.exec_id < ?))")
            params += [after[0], after[0], after[1]]
        if filters.states is not None:
            clause, values = self.dialect.among("x.state", filters.states)
            failures = _literals(filters.states)
            if failures:  # (a workflow whose task failed may have 'finished': it is found too)
                clause = f"({clause} OR {_A_TASK_FAILED.format(p='{p}', states=failures)})"
            clauses.append(clause)
            params += values
        if filters.failed is not None:
            clauses.append(_HAS_FAILED if filters.failed else f"NOT {_HAS_FAILED}")
        for column, value in (
            ("x.template_id", filters.template),
            (VERSION_COLUMN, filters.version),
            ("x.owner", filters.node),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if filters.since is not None:
            clauses.append(f"{_KEY} >= ?")
            params.append(filters.since)
        if filters.until is not None:
            clauses.append(f"{_KEY} < ?")
            params.append(filters.until)
        return clauses, params

    def page(self, filters: Filters, limit: int, after: tuple[str, str] | None) -> list[Row]:
        """Up to `limit` executions, newest first, after the key `after` (see `Admin.page`)."""
        split = _split(filters)
        if split is None:
            clauses, params = self._where(filters, after)
            where = " WHERE " + " AND ".join(clauses) if clauses else ""
            rows = self._fetch(f"{_SUMMARY}{where} {_ORDER} LIMIT ?", [*params, limit])
            return [Row(*r) for r in rows]
        # Failures: first the newest executions are read in order, down to the SCAN_WINDOW-th newest
        # (after `after`): when failures are frequent, the page is full long before.
        clauses, params = self._where(filters, after)
        keys, key_params = self._where(Filters(), after)
        newest = f"SELECT {_KEY} FROM {{p}}executions AS x{' WHERE ' if keys else ''}{' AND '.join(keys)}"
        bound = f"{_KEY} >= coalesce(({newest} {_ORDER} LIMIT 1 OFFSET ?), '')"
        rows = self._fetch(
            f"{_SUMMARY} WHERE {' AND '.join([*clauses, bound])} {_ORDER} LIMIT ?",
            [*params, *key_params, SCAN_WINDOW - 1, limit],
        )
        if len(rows) < limit:  # rare: found through their own indexes
            others, others_params = self._where(replace(filters, states=None, failed=None), after)
            rows = self._rare_failures(split, others, others_params, limit)
        return [Row(*r) for r in rows]

    def _rare_failures(
        self, split: tuple[tuple[str, ...], str], clauses: list[str], params: list[Any], limit: int
    ) -> list[tuple[Any, ...]]:
        """The newest executions in some states or with a task that failed so, when few are.

        Each state's newest (through the index of states and start times), and
        the newest of those with such a task (through the index of failed
        tasks), at most a page of each, then the newest of all of them.
        """
        states, task_states = split
        conditions: list[tuple[str, list[Any]]] = [("x.state = ?", [state]) for state in states]
        conditions.append((f"x.exec_id IN ({_FAILED_TASKS}{task_states})", []))
        branches: list[str] = []
        values: list[Any] = []
        for condition, extra in conditions:
            branches.append(
                f"SELECT b.exec_id FROM (SELECT x.exec_id FROM {{p}}executions AS x "
                f"WHERE {' AND '.join([condition, *clauses])} {_ORDER} LIMIT ?) AS b"
            )
            values += [*extra, *params, limit]
        return self._fetch(
            f"{_SUMMARY} WHERE x.exec_id IN ({' UNION '.join(branches)}) {_ORDER} LIMIT ?", [*values, limit]
        )

    def matching(self, filters: Filters) -> list[Row]:
        """Every execution `filters` selects, newest first."""
        clauses, params = self._where(filters)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        return [Row(*r) for r in self._fetch(f"{_SUMMARY}{where} {_ORDER}", params)]

    def counts(self) -> tuple[dict[str, int], int]:
        """The executions by state, and how many failed, counted by the database (see `Admin.counts`).

        The failed ones through the state index and the failed tasks' own
        index: the cost follows the failures, not the journal's size.
        """
        states = _literals(FAILED_STATES)
        by_state = self._fetch(_BY_STATE, ())
        failed = self._fetch(
            f"SELECT (SELECT count(*) FROM {{p}}executions WHERE state IN ({states})) + "
            f"(SELECT count(DISTINCT t.exec_id) FROM {{p}}tasks AS t JOIN {{p}}executions AS x "
            f"ON x.exec_id = t.exec_id WHERE t.state IN ({states}) AND x.state NOT IN ({states}))",
            (),
        )
        return {str(state): int(count) for state, count in by_state}, int(failed[0][0])

    def row(self, exec_id: str) -> Row | None:
        """One execution, or None."""
        rows = self._fetch(f"{_SUMMARY} WHERE x.exec_id = ?", [exec_id])
        return Row(*rows[0]) if rows else None

    def nodes(self) -> list[NodeRow]:
        """The nodes, with whether each is alive and how many unfinished executions it owns."""
        found = self.runner.nodes()
        live = self.runner.live(n[0] for n in found)
        owned = dict(
            self._fetch("SELECT owner, count(*) FROM {p}executions WHERE state = 'pending' GROUP BY owner", [])
        )
        return [NodeRow(name, epoch, expires, name in live, int(owned.get(name, 0))) for name, epoch, expires in found]

    def cancel(self, exec_id: str) -> str:
        """Cancel an unfinished execution: a request its live owner acts on, or a mark (see `Admin.cancel`)."""
        found = self._fetch("SELECT state, owner FROM {p}executions WHERE exec_id = ?", [exec_id])
        if found and found[0][0] == "queued":  # not started: it never will (its engine drops it at its next look)
            changed = self._execute(
                [
                    (
                        "UPDATE {p}executions SET state = 'cancelled', ended = ?, launch = 0 "
                        "WHERE exec_id = ? AND state = 'queued'",
                        [now(), exec_id],
                    )
                ]
            )
            return "cancelled" if changed[0] else self.cancel(exec_id)
        if not found or found[0][0] != "pending":
            return str(found[0][0]) if found else "missing"
        owner = found[0][1]
        if owner is not None and owner in self.runner.live([owner]):
            statements: list[Statement] = [
                (
                    f"INSERT INTO {{p}}cancels (exec_id, at) VALUES (?, {self.dialect.clock}) ON CONFLICT DO NOTHING",
                    [exec_id],
                )
            ]
            if self.runner.signal is not None:
                statements.append((self.runner.signal, []))
            self._execute(statements)
            return "requested"
        # No live owner: nobody would act on a request, the journal says it is over. Its owner is
        # cleared: a zombie of it writing later is fenced.
        changed = self._execute(
            [
                (
                    "UPDATE {p}executions SET state = 'cancelled', ended = ?, locked = FALSE, owner = NULL, "
                    "epoch = NULL WHERE exec_id = ? AND state = 'pending' AND owner IS ?",
                    [now(), exec_id, owner],
                )
            ]
        )
        return "cancelled" if changed[0] else self.cancel(exec_id)

    def resume(self, exec_id: str, rerun: Sequence[str]) -> bool:
        """Make an ended execution unfinished and unowned again (see `Admin.resume`)."""
        among, values = self.dialect.among("task_id", rerun)
        changed = self._execute(
            [
                (
                    "UPDATE {p}executions SET state = 'pending', ended = NULL, error = NULL, locked = TRUE, "
                    "owner = NULL, epoch = NULL WHERE exec_id = ? AND state != 'pending'",
                    [exec_id],
                ),
                (f"DELETE FROM {{p}}tasks WHERE exec_id = ? AND {among}", [exec_id, *values]),
                (f"DELETE FROM {{p}}task_events WHERE exec_id = ? AND {among}", [exec_id, *values]),
                ("DELETE FROM {p}cancels WHERE exec_id = ?", [exec_id]),
            ]
        )
        return bool(changed[0])

    def fork(self, exec_id: str, new_id: str, keep: Sequence[str]) -> None:
        """Write the new execution `new_id` from `exec_id` (see `Admin.fork`)."""
        among, values = self.dialect.among("task_id", keep)
        texts = ", texts" if self.dialect.numbered else ""  # (PostgreSQL: whether the blobs are text)
        self._execute(
            [
                (
                    "INSERT INTO {p}executions "
                    f"(exec_id, template_id, state, started, template, event, version{texts}) "
                    f"SELECT ?, template_id, 'pending', ?, template, event, version{texts} FROM {{p}}executions "
                    "WHERE exec_id = ?",
                    [new_id, now(), exec_id],
                ),
                (
                    f"INSERT INTO {{p}}tasks (exec_id, task_id, task_exec_id, state, started, ended, data, "
                    f"error{texts}) SELECT ?, task_id, task_exec_id, state, started, ended, data, error{texts} "
                    "FROM {p}tasks "
                    f"WHERE exec_id = ? AND {among}",
                    [new_id, exec_id, *values],
                ),
            ]
        )

    def delete(self, exec_ids: Sequence[str]) -> int:
        """Delete executions with their tasks, events and cancel requests; return how many were."""
        ids = list(exec_ids)
        deleted = 0
        for at in range(0, len(ids), 500):  # (SQLite: at most 999 parameters a statement)
            among, values = self.dialect.among("exec_id", ids[at : at + 500])
            counts = self._execute(
                [
                    (f"DELETE FROM {{p}}{table} WHERE {among}", values)
                    for table in ("tasks", "task_events", "cancels", "executions")
                ]
            )
            deleted += counts[-1]
        return deleted
