"""Cancelling the Engine future (``asyncio.wait_for(engine, t)`` timing out) stops the engine cleanly.

As a task's cancellation stops its work, the engine's stops the engine: its
workflows are cancelled, their ends written, its cluster closed (heartbeat
and listeners end), and the future ends cancelled only then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import template

from tukio import Engine
from tukio.store import MemoryStore, SQLiteStore


@pytest.fixture(params=["none", "memory", "sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """``make_store()``: a new store of the kind the test runs with (None: no store)."""
    made: list[Any] = []
    pg = request.getfixturevalue("pg_schema") if request.param == "postgres" else None

    def new() -> Any:
        match request.param:
            case "none":
                return None
            case "memory":
                made.append(MemoryStore())
            case "sqlite":
                made.append(SQLiteStore(tmp_path / "cancel.db"))
            case _:
                from tukio.store.postgres import PostgresStore

                assert pg is not None
                dsn, schema = pg
                made.append(PostgresStore(dsn, schema=schema))
        return made[-1]

    yield new
    for store in made:
        if hasattr(store, "close"):
            store.close()


@pytest.fixture
def parking(registered: Callable[..., Any], task_name: Callable[[str], str]) -> str:
    """A task that never ends unless cancelled."""
    name = task_name("cancel-park")

    async def park(event: Any) -> None:
        await asyncio.Event().wait()

    registered(name, park)
    return name


def cluster_tasks(engine: Engine) -> list[asyncio.Task[Any]]:
    """The running tasks of the engine's cluster membership (named for its node)."""
    node = engine.node
    if node is None:
        return []
    return [t for t in asyncio.all_tasks() if t.get_name().endswith(f"-{node}") and not t.done()]


async def test_wait_for_timing_out_stops_the_engine_before_it_raises(
    make_store: Callable[[], Any], parking: str
) -> None:
    store = make_store()
    engine = Engine(store=store)
    await engine.load(template([("a", parking)], {}, id="park", policy="start-new"))
    workflow = await engine.trigger("park", {})
    assert workflow is not None
    if store is not None and engine.node is not None:
        assert cluster_tasks(engine)  # the heartbeat runs
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(engine, 0.05)
    assert engine.cancelled()
    assert engine.stopping
    assert workflow.cancelled()
    assert cluster_tasks(engine) == []  # heartbeat and listeners ended with the engine
    if store is not None:
        assert store.load(workflow.uid)["exec"]["state"] == "cancelled"  # its end was written first
    assert await engine.trigger("park", {}) is None
    assert not engine.cancel()  # stopped already
    assert engine.stop() is engine


async def test_cancel_carries_its_message_and_a_stopped_engine_stays_done(parking: str) -> None:
    engine = Engine()
    await engine.load(template([("a", parking)], {}, id="park", policy="start-new"))
    workflow = await engine.trigger("park", {})
    assert workflow is not None
    assert engine.cancel("enough")
    assert not engine.done()  # done once its workflow has ended
    with pytest.raises(asyncio.CancelledError, match="enough"):
        await engine
    assert workflow.cancelled()
    stopped = Engine()
    await stopped.stop()
    assert not stopped.cancel()
    assert stopped.result() is None
