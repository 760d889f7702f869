"""The overrun rule is written once (`tukio.store._gate.rule`): each store's admission is held to it.

PostgreSQL admits a trigger in one round trip, with the rule in PL/pgSQL;
SQLite calls `rule` itself. Both are checked here against `rule` on every
policy, and every state of up to two running executions of the template:
owned by the admitting node (running there or not), by another live node,
by a dead node or by no node, locked or not.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tukio.policy import Decision, OverrunPolicy
from tukio.store import SQLiteStore
from tukio.store._gate import Running, rule
from tukio.store.base import ExecutionRecord

NOW = "2026-01-02T03:04:05.000000+00:00"
#: (owner, counted here): who owns a running execution; None: no node.
OWNERS: tuple[tuple[str | None, bool], ...] = (
    ("me", True),
    ("me", False),
    ("other", True),
    ("gone", True),
    (None, True),
)
KINDS = [(owner, here, locked) for (owner, here) in OWNERS for locked in (True, False)]
CASES = [c for n in range(3) for c in itertools.combinations(KINDS, n)]
POLICIES = [OverrunPolicy.SKIP, OverrunPolicy.START_NEW, OverrunPolicy.SKIP_UNTIL_UNLOCK, OverrunPolicy.ABORT_RUNNING]


class Dialect:
    """How a test reaches one store's tables directly (to set states up, and read them back)."""

    def __init__(self, store: Any, execute: Callable[[str, list[tuple[Any, ...]]], list[tuple[Any, ...]]]) -> None:
        self.store = store
        self.execute = execute


@pytest.fixture(params=["sqlite", "postgres"])
def dialect(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Dialect]:
    if request.param == "sqlite":
        path = tmp_path / "rule.db"
        store = SQLiteStore(path)
        store.attach("me", lease=30)
        store.join()
        now = store.clock()

        def sqlite_execute(query: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
            db = sqlite3.connect(path, isolation_level=None)
            try:
                if rows:
                    db.executemany(query.replace("$n", "?"), rows)
                    return []
                return db.execute(query).fetchall()
            finally:
                db.close()

        other = SQLiteStore(path)  # a live node: its lease runs, and it holds its lock file
        other.attach("other", lease=30)
        other.join()
        sqlite_execute(
            "INSERT INTO nodes (name, epoch, lease, beat, expires) VALUES ($n, 1, 30, $n, $n)",
            [("gone", now - 60, now - 30)],
        )
        yield Dialect(store, sqlite_execute)
        other.close()
        store.close()
    else:
        import asyncpg

        from tukio.store.postgres import PostgresStore

        dsn, schema = request.getfixturevalue("pg_schema")
        store = PostgresStore(dsn, schema=schema)
        store.attach("me", lease=30)
        store.join()

        def pg_execute(query: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
            query = query.replace("nodes", f'"{schema}".nodes').replace("executions", f'"{schema}".executions')
            query = query.replace("cancels", f'"{schema}".cancels')
            marks = iter(range(1, 100))
            while "$n" in query:
                query = query.replace("$n", f"${next(marks)}", 1)

            async def run() -> list[tuple[Any, ...]]:
                conn = await asyncpg.connect(dsn)
                try:
                    if rows:
                        await conn.executemany(query, rows)
                        return []
                    return [tuple(r) for r in await conn.fetch(query)]
                finally:
                    await conn.close()

            return asyncio.run(run())

        pg_execute(
            "INSERT INTO nodes (name, epoch, lease, beat, expires) VALUES "
            "($n, 1, 30, now(), now() + make_interval(secs => $n::float8))",
            [("other", 30.0), ("gone", -30.0)],
        )
        yield Dialect(store, pg_execute)
        store.close()


def test_every_store_admits_as_the_rule_says(dialect: Dialect) -> None:
    store = dialect.store
    rows: list[tuple[Any, ...]] = []
    expected: dict[tuple[int, int], tuple[Decision, list[str], list[str], list[str]]] = {}
    here: dict[tuple[int, int], list[str]] = {}
    epoch = store.epoch
    for p, policy in enumerate(POLICIES):
        for c, case in enumerate(CASES):
            tid = f"t-{p}-{c}"
            running = []
            here[p, c] = []
            for n, (owner, counted, locked) in enumerate(case):
                exec_id = f"{tid}-{n}"
                rows.append((exec_id, tid, owner, {"me": epoch}.get(owner or "", 1), int(locked)))
                if owner == "me" and counted:
                    here[p, c].append(exec_id)
                running.append(Running(exec_id, locked, owner == "me", owner in ("me", "other")))
            ruled = rule(policy, f"{tid}-new", running, here[p, c])
            expected[p, c] = (ruled.decision, sorted(ruled.wait), sorted(ruled.cancel_now), sorted(ruled.request))
    dialect.execute(
        "INSERT INTO executions (exec_id, template_id, state, started, owner, epoch, locked) "
        "VALUES ($n, $n, 'pending', '" + NOW + "', $n, $n, $n::int::boolean)"
        if not isinstance(store, SQLiteStore)
        else "INSERT INTO executions (exec_id, template_id, state, started, owner, epoch, locked) "
        "VALUES ($n, $n, 'pending', '" + NOW + "', $n, $n, $n)",
        rows,
    )
    for p, policy in enumerate(POLICIES):
        for c in range(len(CASES)):
            tid = f"t-{p}-{c}"
            begin = ExecutionRecord(f"{tid}-new", tid, "pending", NOW, template="{}", event="{}")
            decision, waits = store.admit(policy, begin, here[p, c])
            want = expected[p, c]
            assert (decision, sorted(waits)) == want[:2], (policy, CASES[c])
    # What 'abort-running' did besides: dead nodes' executions cancelled, live ones' requested.
    cancelled = {r[0] for r in dialect.execute("SELECT exec_id FROM executions WHERE state = 'cancelled'", [])}
    requested = {r[0] for r in dialect.execute("SELECT exec_id FROM cancels", [])}
    assert cancelled == {i for want in expected.values() for i in want[2]}
    assert requested == {i for want in expected.values() for i in want[3]}
    started = {r[0] for r in dialect.execute("SELECT exec_id FROM executions WHERE exec_id LIKE '%-new'", [])}
    assert started == {f"t-{p}-{c}-new" for (p, c), want in expected.items() if want[0] is not Decision.skip}
