"""The SQLite store keeps its write-ahead log bounded, and gives back the space of pruned executions."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from support import template

import tukio.store.sqlite as sqlite_store
from tukio import Engine
from tukio.store import SQLiteStore
from tukio.store.base import ExecutionRecord, TaskRecord

PAGE = 4096


def _wal(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


@pytest.fixture
def two_tasks(registered: Callable[..., Any], task_name: Callable[[str], str]) -> Any:
    name = task_name("wal")

    async def noop(data: Any) -> Any:
        return {"payload": "x" * 200}

    registered(name, noop)
    return template([("a", name), ("b", name)], {"a": ["b"]}, id="two")


async def _run(engine: Engine, tmpl: Any, count: int, concurrency: int) -> None:
    left = iter(range(count))

    async def feeder() -> None:
        for i in left:
            workflow = await engine.run_once(tmpl, {"n": i})
            assert workflow is not None
            await workflow

    await asyncio.gather(*(feeder() for _ in range(concurrency)))


async def test_the_wal_stays_bounded_while_the_engine_runs(
    tmp_path: Path, two_tasks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_EVERY", 100)
    monkeypatch.setattr(sqlite_store, "WAL_SIZE_LIMIT", 64 * PAGE, raising=False)
    path = tmp_path / "bounded.db"
    store = SQLiteStore(path)
    engine = Engine(store=store)
    biggest = 0
    for _ in range(6):
        await _run(engine, two_tasks, 300, 20)
        await engine.flush()
        biggest = max(biggest, _wal(path))
    await engine.stop()
    # Unbounded, 1,800 workflows left about 7 MB of WAL here; bounded, the WAL
    # restarts after each checkpoint and is cut back to WAL_SIZE_LIMIT.
    assert biggest < 1024 * 1024, biggest
    assert len(store.executions()) == 1800
    store.close()


async def test_an_external_checkpoint_completes_while_the_store_is_open(tmp_path: Path, two_tasks: Any) -> None:
    path = tmp_path / "external.db"
    with SQLiteStore(path) as store:
        engine = Engine(store=store)
        await _run(engine, two_tasks, 200, 10)
        await engine.stop()
        store.load(store.executions()[0].exec_id)  # a read leaves no transaction open
        other = sqlite3.connect(path)
        try:
            busy, frames, copied = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            other.close()
        assert busy == 0
        assert frames == copied == 0
        assert _wal(path) == 0


def test_the_threaded_writer_checkpoints_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_EVERY", 50)
    monkeypatch.setattr(sqlite_store, "WAL_SIZE_LIMIT", 16 * PAGE, raising=False)
    path = tmp_path / "full.db"
    with SQLiteStore(path, synchronous="FULL") as store:
        for i in range(400):
            store.write([TaskRecord(f"e{i}", "a", None, "finished", None, None, "{}" + " " * 2000)])
            # At most 50 commits of a few pages each since the last checkpoint
            # (unbounded, it reached about 1,000 pages).
            assert _wal(path) < 400 * PAGE


def _finished(exec_id: str, ended: datetime) -> list[ExecutionRecord | TaskRecord]:
    end = ended.isoformat()
    return [
        ExecutionRecord(exec_id, "t", "finished", end, end, template="{}", event="{}"),
        TaskRecord(exec_id, "a", "x", "finished", end, end, '{"outputs":"' + "y" * 3000 + '"}'),
    ]


def test_prune_gives_the_space_back(tmp_path: Path) -> None:
    path = tmp_path / "prune.db"
    old = datetime.now(timezone.utc) - timedelta(days=2)
    with SQLiteStore(path) as store:
        for i in range(500):
            store.write(_finished(f"e{i}", old))
        store.write(_finished("recent", datetime.now(timezone.utc)))
        store.checkpoint()
        full = path.stat().st_size
        assert store.prune(before=datetime.now(timezone.utc) - timedelta(days=1)) == 500
        assert path.stat().st_size < full / 10
        assert _wal(path) <= sqlite_store.WAL_SIZE_LIMIT
        assert [i.exec_id for i in store.executions()] == ["recent"]
        assert store.load("recent")["exec"]["state"] == "finished"


def test_vacuum_compacts_a_database_made_without_incremental_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    legacy = sqlite3.connect(path)
    legacy.execute("PRAGMA journal_mode=WAL")
    legacy.close()
    with SQLiteStore(path) as store:
        for i in range(300):
            store.write(_finished(f"e{i}", datetime.now(timezone.utc)))
        store.checkpoint()
        full = path.stat().st_size
        # The file predates incremental vacuum: pruning frees pages but cannot give them back.
        assert store.prune() == 300
        store.vacuum()
        assert path.stat().st_size < full / 10
        assert _wal(path) == 0
        store.write(_finished("after", datetime.now(timezone.utc)))
        assert store.prune() == 1
        assert store.executions() == []


def test_a_closed_store_refuses_maintenance(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "closed.db")
    store.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        store.vacuum()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        store.checkpoint()


def test_a_long_read_elsewhere_holds_the_checkpoint_back_without_blocking_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "reader.db"
    with SQLiteStore(path) as store:
        store.write(_finished("a", datetime.now(timezone.utc)))
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM executions").fetchall()
            store.write(_finished("b", datetime.now(timezone.utc)))
            assert store.checkpoint() is False
            assert "a read holds it" in caplog.text
            store.write(_finished("c", datetime.now(timezone.utc)))
            reader.execute("COMMIT")
        finally:
            reader.close()
        assert store.checkpoint() is True
        assert _wal(path) == 0
        assert len(store.executions()) == 3
