"""Faults stay with the workflow or task they belong to (issue 12: items 1, 3 and 5)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support import template, until

import tukio.store.journal as journal_module
from tukio import Engine, Event, TaskHolder, Workflow
from tukio.store import MemoryStore, SQLiteStore, Store
from tukio.store.base import Record, TaskRecord


@pytest.fixture(params=["none", "memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store | None]:
    if request.param == "none":
        yield None
        return
    made: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "faults.db")
    with made:
        yield made


# -- 1. a holder whose report() raises -------------------------------------------------------
class BadReport(TaskHolder):
    """report() raises: always, or only while the task waits on `gate`."""

    gate: asyncio.Event
    always = True

    async def execute(self, event: Event) -> dict[str, Any]:
        await self.gate.wait()
        return {"done": True}

    def report(self) -> Any:
        if self.always or not self.gate.is_set():
            raise ValueError("report is broken")
        return {"fine": True}


@pytest.mark.parametrize("always", [True, False])
async def test_a_failing_report_is_contained_to_its_task(
    store: Store | None, noop: str, registered: Callable[..., Any], task_name: Callable[[str], str], always: bool
) -> None:
    name = task_name("bad-report")
    registered(name, type("Bad", (BadReport,), {"always": always, "gate": asyncio.Event()}), "execute")
    engine = Engine(store=store)
    bad = await engine.run_once(template([("a", name), ("b", noop)], {"a": ["b"]}, id="bad"), {})
    assert bad is not None
    # Unrelated workflows started meanwhile finish although 'a' runs (and fails to report).
    others = [await engine.run_once(template([("x", noop)], {}, id=f"o{i}"), {}) for i in range(5)]
    await asyncio.wait_for(asyncio.gather(*others), 5)  # type: ignore[arg-type]
    assert "report is broken" in bad.report()["tasks"][0]["exec"]["reporting"]
    bad.tasks_by_id["a"].holder.gate.set()
    await asyncio.wait_for(bad, 5)
    await asyncio.wait_for(engine.stop(), 5)
    entry = bad.report()["tasks"][0]["exec"]
    assert entry["state"] == "finished"
    if always:
        assert entry["reporting"] == "report() failed: ValueError: report is broken"
    else:
        assert entry["reporting"] == {"fine": True}
    assert bad.report()["tasks"][1]["exec"]["state"] == "finished"
    if store is not None:
        stored = store.load(bad.uid)
        assert stored["exec"]["state"] == "finished"
        assert stored["tasks"][0]["exec"]["reporting"] == entry["reporting"]


# -- 5. skip-until-unlock releases the lock as the task ends ----------------------------------
class HeldStore(MemoryStore):
    """Writes only from the journal's thread; every write after the first `free` waits for `release`."""

    blocking = True

    def __init__(self, free: int) -> None:
        super().__init__()
        self.free = free
        self.release = threading.Event()
        self.holding = threading.Event()

    def write(self, records: Sequence[Record]) -> None:
        if self.free:
            self.free -= 1
        else:
            self.holding.set()
            assert self.release.wait(5), "the test never released the store"
        super().write(records)


async def test_the_lock_is_released_when_the_task_ends_not_when_its_end_is_written(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    gate = asyncio.Event()

    async def unlocking(event: Event) -> None:
        Workflow.current_workflow().unlock_when_task_done()  # type: ignore[union-attr]

    async def waiting(event: Event) -> None:
        await gate.wait()

    first, second = task_name("unlock"), task_name("wait")
    registered(first, unlocking)
    registered(second, waiting)
    store = HeldStore(free=1)  # the trigger is written; the end of 'a' is held
    engine = Engine(store=store)
    await engine.load(template([("a", first), ("b", second)], {"a": ["b"]}, id="locked"))
    wf = await engine.trigger("locked", {})
    assert wf is not None
    while "a" not in wf.tasks_by_id:  # noqa: ASYNC110 - the root starts once the trigger is written
        await asyncio.sleep(0.001)
    await asyncio.wait_for(asyncio.shield(wf.tasks_by_id["a"]), 5)
    assert not wf.lock.locked()
    # Not skipped: 'a' ended, so the first workflow is unlocked. The trigger returns once
    # its begin is committed, behind the held end of 'a': it is running meanwhile.
    triggering = asyncio.create_task(engine.trigger("locked", {}))
    await until(lambda: len(engine.running("locked")) == 2)
    store.release.set()
    again = await asyncio.wait_for(triggering, 5)
    assert again is not None
    gate.set()
    await asyncio.wait_for(asyncio.gather(wf, again), 5)
    await asyncio.wait_for(engine.stop(), 5)


# -- 3. one bad record never fails the others ----------------------------------------------------
async def test_text_with_lone_surrogates_is_stored_escaped(
    tmp_path: Path, noop: str, registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    bad_name = os.fsdecode(b"file-\xff.txt")

    async def failing(event: Event) -> None:
        raise FileNotFoundError(bad_name)

    name = task_name("surrogate")
    registered(name, failing)
    with SQLiteStore(tmp_path / "surrogates.db") as store:
        engine = Engine(store=store)
        bad_id = "wf-" + bad_name
        bad = await engine.run_once(template([("a", name), ("b", noop)], {"a": ["b"]}, id=bad_id), {})
        others = [await engine.run_once(template([("x", noop)], {}, id=f"ok{i}"), {}) for i in range(20)]
        await asyncio.wait_for(asyncio.gather(bad, *others), 5)  # type: ignore[arg-type]
        await asyncio.wait_for(engine.stop(), 5)
        for other in others:
            assert other is not None
            assert store.load(other.uid)["tasks"][0]["exec"]["state"] == "finished"
        assert bad is not None
        stored = store.load(bad.uid)
        assert stored["exec"]["state"] == "finished"
        assert stored["tasks"][0]["exec"]["state"] == "exception"
        assert stored["tasks"][0]["exec"]["error"] == "FileNotFoundError: file-\\udcff.txt"
        assert {info.template_id for info in store.executions()} >= {"wf-file-\\udcff.txt"}


class PickyStore(MemoryStore):
    """Refuses (alone) every task record whose data mentions 'poison'."""

    def write(self, records: Sequence[Record]) -> None:
        for r in records:
            if isinstance(r, TaskRecord) and "poison" in str(r.data):
                raise ValueError("the store cannot take this value")
        super().write(records)


async def test_a_record_the_store_refuses_is_replaced_alone(
    noop: str, registered: Callable[..., Any], task_name: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    async def poisoned(event: Event) -> dict[str, Any]:
        return {"value": "poison"}

    name = task_name("poison")
    registered(name, poisoned)
    store = PickyStore()
    engine = Engine(store=store)
    bad = await engine.run_once(template([("a", name), ("b", noop)], {"a": ["b"]}, id="poisoned"), {})
    others = [await engine.run_once(template([("x", noop)], {}, id=f"ok{i}"), {}) for i in range(20)]
    await asyncio.wait_for(asyncio.gather(bad, *others), 5)  # type: ignore[arg-type]
    await asyncio.wait_for(engine.stop(), 5)
    for other in others:
        assert other is not None
        assert store.load(other.uid)["exec"]["state"] == "finished"
        assert store.load(other.uid)["tasks"][0]["exec"]["state"] == "finished"
    assert bad is not None
    stored = store.load(bad.uid)
    assert stored["exec"]["state"] == "finished"
    assert stored["tasks"][0]["exec"]["state"] == "finished"
    assert stored["tasks"][0]["exec"].get("outputs") is None  # the data was left out
    assert f"workflow {bad.uid}, task a: the data could not be stored" in caplog.text


async def test_a_store_that_refuses_everything_for_a_while_loses_nothing(
    noop: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(journal_module, "RETRY_DELAY", (0.001, 0.004))

    class LockedStore(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.refusals = 30

        def write(self, records: Sequence[Record]) -> None:
            if self.refusals:
                self.refusals -= 1
                raise OSError("database is locked")
            super().write(records)

    caplog.set_level(logging.WARNING)
    store = LockedStore()
    engine = Engine(store=store)
    flows = [
        await engine.run_once(template([("x", noop), ("y", noop)], {"x": ["y"]}, id=f"w{i}"), {}) for i in range(10)
    ]
    await asyncio.wait_for(asyncio.gather(*flows), 5)  # type: ignore[arg-type]
    await asyncio.wait_for(engine.stop(), 5)
    assert store.refusals == 0
    assert [info.state for info in store.executions()] == ["finished"] * 10
    for flow in flows:
        assert flow is not None
        assert [t["exec"]["state"] for t in store.load(flow.uid)["tasks"]] == ["finished", "finished"]
    assert "database is locked" in caplog.text


async def test_flush_waits_for_what_the_writer_thread_still_holds(noop: str) -> None:
    store = HeldStore(free=0)  # every write waits for `release`
    engine = Engine(store=store)
    # run_once() returns once the trigger's batch is committed: it waits too.
    running = asyncio.create_task(engine.run_once(template([("x", noop)], {}, id="held"), {}))
    assert await asyncio.to_thread(store.holding.wait, 5)  # the trigger's batch is in the writer thread, held
    flushed = asyncio.ensure_future(engine.flush())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not flushed.done()  # nothing new was recorded, but the held batch is not written yet
    assert not running.done()
    store.release.set()
    await asyncio.wait_for(flushed, 5)
    wf = await asyncio.wait_for(running, 5)
    assert wf is not None
    assert [info.exec_id for info in store.executions()] == [wf.uid]
    await asyncio.wait_for(asyncio.gather(wf, engine.stop()), 5)
    assert store.load(wf.uid)["exec"]["state"] == "finished"
