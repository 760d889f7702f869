"""PostgreSQL's one-round-trip admission (``flow_admit``) gives the answers of the queue's one rule.

`tukio.store._flowsql` admits queued rows in Python over plain statements
(SQLite, and PostgreSQL for templates with a concurrency key, a rate, or a
due time to read); PostgreSQL admits the other templates' rows with the
``flow_admit`` function. On seeded random queues (states, owners,
priorities, due times, limits), both leave the same rows admitted, with the
same launch flags, and hand the node the same rows.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tukio.store import PostgresStore
from tukio.store._flowsql import Limits


@pytest.fixture
async def twins(pg_schema: tuple[str, str]) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on two schemas, node 'a' joined on both."""
    dsn, schema = pg_schema
    made = [PostgresStore(dsn, schema=f"{schema}{suffix}") for suffix in ("", "_twin")]
    for store in made:
        store.attach("a")
        store.join()
    yield made[0], made[1]
    for store in made:
        await store.flow_release()
        store.close()
    from pg import drop_schema

    await asyncio.to_thread(drop_schema, f"{schema}_twin")


def _queue(seed: int) -> list[tuple[Any, ...]]:
    """Rows (exec_id, state, owner, epoch, priority, due, queued_at) of template 't'."""
    rng = random.Random(seed)
    now = time.time()
    rows = []
    for n in range(rng.randint(0, 25)):
        state = rng.choice(["queued", "queued", "queued", "pending", "finished"])
        owner = rng.choice(["a", "a", "b", None])
        due = rng.choice([None, None, now - 60, now + 3600])
        rows.append((f"x{n:02d}", state, owner, 1 if owner is not None else None, rng.choice([0, 0, 1, 5]), due, n))
    return rows


async def _fill(store: PostgresStore, rows: list[tuple[Any, ...]]) -> None:
    s = store.sql.schema
    await store._loop_link().call(
        lambda c: c.executemany(
            f"INSERT INTO {s}.executions (exec_id, template_id, state, owner, epoch, priority, due, queued_at, part) "
            "VALUES ($1, 't', $2, $3, $4, $5, $6, $7, '')",
            rows,
        )
    )


async def _table(store: PostgresStore) -> list[tuple[Any, ...]]:
    s = store.sql.schema
    found = await store._loop_link().call(
        lambda c: c.fetch(f"SELECT exec_id, state, launch FROM {s}.executions ORDER BY exec_id")
    )
    return [tuple(r) for r in found]


@pytest.mark.parametrize("limit", [None, 1, 3, 10])
async def test_flow_admit_answers_as_the_rule(twins: tuple[PostgresStore, PostgresStore], limit: int | None) -> None:
    rule, fast = twins
    for seed in range(12):
        rows = _queue(seed * 7 + (limit or 0))
        for store in twins:
            s = store.sql.schema
            await store._loop_link().call(lambda c, s=s: c.execute(f"DELETE FROM {s}.executions"))
            await _fill(store, rows)
        limits = Limits(concurrency=limit)
        by_rule = await rule.flow_step("t", limits, (), look_due=True)  # the rule, in Python
        by_sql = await fast.flow_step("t", limits, (), look_due=False)  # flow_admit
        assert sorted(by_sql.launch) == sorted(by_rule.launch), f"seed {seed}"
        assert await _table(fast) == await _table(rule), f"seed {seed}"
