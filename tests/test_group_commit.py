"""A PostgreSQL group commit one bad record breaks: the others land, the bad one is refused alone (issue 19, 10)."""

from __future__ import annotations

import asyncio

import pytest

from tukio.store.base import ExecutionRecord, TaskRecord

NOW = "2026-01-02T03:04:05.000000+00:00"


def begin(exec_id: str) -> ExecutionRecord:
    return ExecutionRecord(exec_id, "t", "pending", NOW, template="{}", event="{}")


def task(exec_id: str, error: str | None = None) -> TaskRecord:
    return TaskRecord(exec_id, "a", f"{exec_id}-a", "finished", NOW, NOW, '{"outputs": {}}', error)


async def test_one_bad_record_fails_neither_the_group_nor_its_neighbours(pg_schema: tuple[str, str]) -> None:
    import asyncpg

    from tukio.store.postgres import PostgresStore

    dsn, schema = pg_schema
    store = PostgresStore(dsn, schema=schema)
    try:
        loop = asyncio.get_running_loop()
        results: dict[str, asyncio.Future[BaseException | None]] = {}
        # Three journal batches handed over in one turn: one group commit. PostgreSQL text takes no NUL.
        for exec_id, error in (("good-1", None), ("bad", "a NUL \x00 here"), ("good-2", None)):
            results[exec_id] = loop.create_future()
            assert store.write_soon([begin(exec_id), task(exec_id, error)], results[exec_id].set_result)
        done = {k: await asyncio.wait_for(f, 10) for k, f in results.items()}
        assert done == {"good-1": None, "bad": None, "good-2": None}
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(f'SELECT exec_id, state, error FROM "{schema}".tasks ORDER BY exec_id')
        finally:
            await conn.close()
        assert [(r[0], r[1]) for r in rows] == [("bad", "exception"), ("good-1", "finished"), ("good-2", "finished")]
        # The bad record went in smaller: its task failed, saying why (its workflow sees that error).
        assert "its record cannot be stored" in rows[0][2]
    finally:
        await asyncio.to_thread(store.close)


async def test_a_record_the_store_takes_in_no_form_fails_its_batch_alone(
    pg_schema: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tukio.store import journal
    from tukio.store.postgres import PostgresStore

    dsn, schema = pg_schema
    store = PostgresStore(dsn, schema=schema)
    monkeypatch.setattr(journal, "_smaller", lambda record, empty, exc: iter(()))  # no smaller version
    try:
        loop = asyncio.get_running_loop()
        good: asyncio.Future[BaseException | None] = loop.create_future()
        bad: asyncio.Future[BaseException | None] = loop.create_future()
        assert store.write_soon([begin("fine")], good.set_result)
        assert store.write_soon([begin("nul\x00")], bad.set_result)
        assert await asyncio.wait_for(good, 10) is None
        error = await asyncio.wait_for(bad, 10)
        assert error is not None
        assert [i.exec_id for i in await asyncio.to_thread(store.executions)] == ["fine"]
    finally:
        await asyncio.to_thread(store.close)
