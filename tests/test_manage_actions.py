"""`tukio.manage` actions: cancel, resume, retry, delete (one and by filter), on every store, with real engines.

The manager opens the store on its own (another store object on the same
file or schema, as another process would), except for the memory store,
which only the engine sharing it can act on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import chain
from support import run_to_end as run
from test_manage import STORES, open_store

from tukio import Engine
from tukio.manage import ExecutionDetail, Manager, UnknownExecution
from tukio.store import MemoryStore
from tukio.store.base import ExecutionRecord, Store


@pytest.fixture(params=STORES)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """(the engine's store, the manager's store): one object for memory, two otherwise."""
    first = open_store(request.param, tmp_path, request)
    if isinstance(first, MemoryStore):
        yield first, first
        first.close()
        return
    second = open_store(request.param, tmp_path, request)
    yield first, second
    second.close()
    first.close()


@pytest.fixture
async def engine(stores: tuple[Store, Store]) -> AsyncIterator[Engine]:
    eng = Engine(store=stores[0], lease=0.3)
    yield eng
    await asyncio.wait_for(eng.stop(force=True), 10)


@pytest.fixture
def manager(stores: tuple[Store, Store], engine: Engine) -> Manager:
    store = stores[1]
    return Manager(store, engine=engine if isinstance(store, MemoryStore) else None)


class Tasks:
    """Registered tasks: 'count' (doubles 'n' and counts its runs), 'flaky' (raises while `failing`), 'wait'."""

    def __init__(self, registered: Callable[..., Any], task_name: Callable[[str], str]) -> None:
        self.runs = 0
        self.failing = True
        self.started = asyncio.Event()
        self.names = {k: task_name(k) for k in ("count", "flaky", "wait")}
        registered(self.names["count"], self.count)
        registered(self.names["flaky"], self.flaky)
        registered(self.names["wait"], self.wait)

    async def count(self, event: Any) -> dict[str, int]:
        self.runs += 1
        return {"n": event.data["n"] * 2}

    async def flaky(self, event: Any) -> dict[str, int]:
        if self.failing:
            raise RuntimeError("not yet")
        return {"n": event.data["n"] + 1}

    async def wait(self, event: Any) -> None:
        self.started.set()
        await asyncio.Event().wait()


@pytest.fixture
def tasks(registered: Callable[..., Any], task_name: Callable[[str], str]) -> Tasks:
    return Tasks(registered, task_name)


async def settled(
    manager: Manager, exec_id: str, done: Callable[[ExecutionDetail], bool] | None = None
) -> ExecutionDetail:
    """The execution once it ended (and `done` holds); fails after 15 s."""
    deadline = time.monotonic() + 15
    while True:
        detail = await manager.get(exec_id)
        if detail.state != "pending" and (done is None or done(detail)):
            return detail
        assert time.monotonic() < deadline, f"{exec_id} still {detail.state}"
        await asyncio.sleep(0.05)


async def test_cancel_a_running_execution(engine: Engine, manager: Manager, tasks: Tasks) -> None:
    template = chain("waits", tasks.names["count"], tasks.names["wait"])
    await engine.load(template)
    workflow = await engine.trigger("waits", {"n": 1})
    assert workflow is not None
    await asyncio.wait_for(tasks.started.wait(), 10)
    await engine.flush()
    outcome = await manager.cancel(workflow.uid)
    assert outcome in ("requested", "cancelled")  # requested from another store, cancelled in place
    await asyncio.wait_for(asyncio.wait([workflow]), 10)
    detail = await settled(manager, workflow.uid)
    assert detail.state == "cancelled"
    assert await manager.cancel(workflow.uid) == "cancelled"  # ended: its state, nothing done


async def test_cancel_an_execution_nobody_runs(stores: tuple[Store, Store]) -> None:
    """What a killed ``tukio run`` leaves: unfinished, with no live owner."""
    store = stores[1]
    store.write([ExecutionRecord("left", "t", "pending", "2026-01-01T00:00:00.000000+00:00", None)])
    manager = Manager(store)
    assert await manager.cancel("left") == "cancelled"
    assert (await manager.get("left")).state == "cancelled"
    with pytest.raises(UnknownExecution, match="'gone'"):
        await manager.cancel("gone")


async def test_resume_a_failed_execution(engine: Engine, manager: Manager, tasks: Tasks) -> None:
    template = chain("flaky", tasks.names["count"], tasks.names["flaky"], tasks.names["count"])
    await engine.load(template)
    exec_id = await run(engine, template, 5)
    before = await manager.get(exec_id)
    assert before.failed
    assert [t.state for t in before.tasks] == ["finished", "exception", None]
    tasks.failing = False
    await manager.resume(exec_id)
    after = await settled(manager, exec_id, lambda d: not d.failed)
    assert after.state == "finished"
    assert [t.outputs for t in after.tasks] == [{"n": 10}, {"n": 11}, {"n": 22}]
    assert after.tasks[0].start == before.tasks[0].start  # kept, not run again
    assert tasks.runs == 2
    with pytest.raises(ValueError, match="finished without a failure: nothing to resume"):
        await manager.resume(exec_id)


async def test_retry_from_a_task_is_a_new_execution(engine: Engine, manager: Manager, tasks: Tasks) -> None:
    count = tasks.names["count"]
    template = chain("three", count, count, count)
    await engine.load(template)
    old = await run(engine, template, 1)
    assert tasks.runs == 3
    new = await manager.retry(old, from_task="t2")
    assert new != old
    detail = await settled(manager, new)
    assert [t.outputs for t in detail.tasks] == [{"n": 2}, {"n": 4}, {"n": 8}]
    assert tasks.runs == 5  # t2 and t3 only
    original = await manager.get(old)
    assert detail.tasks[0].start == original.tasks[0].start  # t1's committed outputs reused
    assert detail.tasks[1].start != original.tasks[1].start
    again = await manager.retry(old)  # from the start
    assert [t.outputs for t in (await settled(manager, again)).tasks] == [{"n": 2}, {"n": 4}, {"n": 8}]
    assert tasks.runs == 8


async def test_retry_refuses_what_it_cannot_do(engine: Engine, manager: Manager, tasks: Tasks) -> None:
    template = chain("fails", tasks.names["flaky"], tasks.names["count"])
    exec_id = await run(engine, template)
    with pytest.raises(ValueError, match=r"has no task 't9': its tasks are t1, t2"):
        await manager.retry(exec_id, from_task="t9")
    with pytest.raises(ValueError, match=r"task 't1' before 't2' did not finish \(state exception\)"):
        await manager.retry(exec_id, from_task="t2")


async def test_delete_and_bulk_actions(engine: Engine, manager: Manager, tasks: Tasks) -> None:
    count = tasks.names["count"]
    ok = [await run(engine, chain("ok", count), n) for n in range(3)]
    bad = await run(engine, chain("bad", tasks.names["flaky"]))
    assert await manager.delete_many(dry_run=True, template="ok") == ok[::-1]
    assert await manager.resume_many(dry_run=True) == [bad]
    assert await manager.cancel_many(dry_run=True) == []
    assert await manager.retry_many(dry_run=True, failed=True) == [bad]
    await manager.delete(ok[0])
    with pytest.raises(UnknownExecution):
        await manager.get(ok[0])
    assert await manager.delete_many(template="ok") == ok[:0:-1]
    assert [i.id for i in (await manager.list()).items] == [bad]
    with pytest.raises(ValueError, match="unknown filter 'colour'"):
        await manager.delete_many(colour="red")


async def test_unfinished_executions_are_not_deleted_nor_retried(stores: tuple[Store, Store]) -> None:
    store = stores[1]
    store.write([ExecutionRecord("running", "t", "pending", "2026-01-01T00:00:00.000000+00:00", None)])
    manager = Manager(store)
    actions: list[Callable[[], Awaitable[Any]]] = [
        lambda: manager.delete("running"),
        lambda: manager.retry("running"),
        lambda: manager.resume("running"),
    ]
    for action in actions:
        with pytest.raises(ValueError, match="'running' is unfinished"):
            await action()
    assert await manager.delete_many() == []


async def test_postgres_cancel_reaches_the_owner_at_once(
    pg_schema: tuple[str, str], registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    """A heartbeat every 10 s: the cancel arrives through NOTIFY, long before the next one."""
    from tukio.store import PostgresStore

    dsn, schema = pg_schema
    tasks = Tasks(registered, task_name)
    with PostgresStore(dsn, schema=schema) as mine, PostgresStore(dsn, schema=schema) as theirs:
        engine = Engine(store=mine, lease=30)
        try:
            template = chain("slow-beat", tasks.names["wait"])
            workflow = await engine.run_once(template, {"n": 1})
            assert workflow is not None
            await asyncio.wait_for(tasks.started.wait(), 10)
            await engine.flush()
            assert await Manager(theirs).cancel(workflow.uid) == "requested"
            await asyncio.wait_for(asyncio.wait([workflow]), 5)
            assert workflow.cancelled()
        finally:
            await asyncio.wait_for(engine.stop(force=True), 10)


async def test_bulk_actions_act_on_what_they_select(stores: tuple[Store, Store]) -> None:
    store = stores[1]
    start = "2026-01-01T00:00:0{}.000000+00:00"
    store.write([ExecutionRecord(f"left-{n}", "t", "pending", start.format(n), None) for n in range(2)])
    manager = Manager(store)
    assert await manager.cancel_many(template="t") == ["left-1", "left-0"]
    assert {i.state for i in (await manager.list()).items} == {"cancelled"}
    retried = await manager.retry_many(template="t")
    assert retried == ["left-1", "left-0"]
    assert len((await manager.list(state="pending")).items) == 2  # the new ones, for an engine to run
    assert await manager.resume_many(state="cancelled") == ["left-1", "left-0"]
    assert len((await manager.list(state="pending")).items) == 4
