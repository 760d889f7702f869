"""Events a task received are journaled with it: a re-run (recover, takeover) gets them again, in order."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support import template

from tukio import Engine, Event, WorkflowTemplate
from tukio.errors import DamagedRecordError
from tukio.event import EventSource
from tukio.store import MemoryStore, PostgresStore, SQLiteStore, Store
from tukio.store._catchup import read_mark
from tukio.store.base import LOST_EVENT, ExecutionRecord, JSONSerializer, Record, TaskEventRecord, task_events
from tukio.store.journal import Journal, _smaller, write_all

#: What each run of the listening task got: (run number, n of each event), in order.
GOT: list[tuple[int, int]] = []
RUNS: list[int] = []


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait (bounded) until `predicate()` is true: a task's progress, or a commit on another thread."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition never became true"
        await asyncio.sleep(0.005)


@pytest.fixture
def waiter(registered: Callable[..., Any], task_name: Callable[[str], str]) -> str:
    """A task that reads events from its queue until it got `config['want']` of them; it fails on n == -1."""
    GOT.clear()
    RUNS.clear()

    async def wait_for_events(event: Event) -> dict[str, Any]:
        task = asyncio.current_task()
        want = task.template.config.get("want", 3)  # type: ignore[union-attr]
        RUNS.append(len(RUNS) + 1)
        run = RUNS[-1]
        got: list[int] = []
        while len(got) < want:
            seen = await task.queue.get()  # type: ignore[union-attr]
            n = seen.data["n"]
            GOT.append((run, n))
            if n == -1:
                raise ConnectionError("asked to fail")
            got.append(n)
        return {"got": got}

    name = task_name("waiter")
    registered(name, wait_for_events)
    return name


def listening(name: str, **task: Any) -> WorkflowTemplate:
    return template([("w", name, {"topics": ["news"], **task})], {}, id="listen", topics=[])


def freeze(store: Store) -> None:
    """From now on the store writes nothing, as if its process had died (see `thaw`)."""
    store.write = lambda records: None  # type: ignore[method-assign]
    store.write_nowait = lambda records: True  # type: ignore[method-assign]

    def write_soon(records: Sequence[Record], done: Callable[[BaseException | None], None]) -> bool:
        done(None)
        return True

    store.write_soon = write_soon  # type: ignore[method-assign]


def thaw(store: Store) -> None:
    """The store writes again (a memory store, which lives on after its engine 'died')."""
    del store.write, store.write_nowait, store.write_soon  # type: ignore[attr-defined]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """Two stores on one journal: the crashed engine's, and the one that recovers (or takes over)."""
    if request.param == "memory":
        store = MemoryStore()
        yield store, store
        return
    made: list[Store]
    if request.param == "sqlite":
        made = [SQLiteStore(tmp_path / "j.db"), SQLiteStore(tmp_path / "j.db")]
    else:
        dsn, schema = request.getfixturevalue("pg_schema")
        made = [PostgresStore(dsn, schema=schema), PostgresStore(dsn, schema=schema)]
    yield made[0], made[1]
    for store in made:
        store.close()


def engine_on(store: Store, name: str) -> Engine:
    return Engine(store=store, node=name, lease=30) if not isinstance(store, MemoryStore) else Engine(store=store)


async def test_a_rerun_gets_its_events_again_in_order_before_new_ones(
    two_stores: tuple[Store, Store], waiter: str
) -> None:
    first_store, second_store = two_stores
    first = engine_on(first_store, "first")
    await first.load(listening(waiter))
    wf = await first.trigger("listen", {})
    assert wf is not None
    await until(lambda: RUNS)
    await first.data_received({"n": 1, "big": "x" * 200_000}, topic="news")  # payloads of any size
    await first.data_received({"n": 2}, topic="news")
    await until(lambda: len(GOT) == 2)
    await first.flush()
    freeze(first_store)  # the node dies: nothing more is written
    await asyncio.wait_for(first.stop(force=True), 10)
    thaw(first_store)

    second = engine_on(second_store, "second")
    await second.load(listening(waiter))
    [again] = await second.recover()
    assert again.uid == wf.uid
    await until(lambda: len(GOT) == 4)
    await second.data_received({"n": 3}, topic="news")
    await asyncio.wait_for(again, 10)
    assert GOT == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]
    assert again.tasks_by_id["w"].outputs == {"got": [1, 2, 3]}
    await asyncio.wait_for(second.stop(), 10)
    events = await asyncio.to_thread(second_store.task_events, wf.uid)
    # (In a store the nodes share, the task's first record is where the shared events stood when
    # it started listening: see tukio.store._catchup.)
    kept = [(seq, payload) for seq, payload in events["w"] if read_mark(payload) is None]
    first_seq = kept[0][0]
    assert [(seq - first_seq, payload[0]["n"], payload[1]) for seq, payload in kept] == [
        (0, 1, "news"),
        (1, 2, "news"),
        (2, 3, "news"),
    ]
    assert await asyncio.to_thread(second_store.prune) == 1
    assert await asyncio.to_thread(second_store.task_events, wf.uid) == {}


class HeldStore(MemoryStore):
    """A memory store whose writes (from the journal's thread) wait until released."""

    blocking = True

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.writing = threading.Event()

    def write(self, records: Sequence[Record]) -> None:
        if any(isinstance(r, TaskEventRecord) for r in records):
            self.writing.set()
            assert self.release.wait(10)
        super().write(records)


async def test_a_task_gets_an_event_only_once_it_is_committed(waiter: str) -> None:
    store = HeldStore()
    engine = Engine(store=store)
    await engine.load(listening(waiter, config={"want": 2}))
    wf = await engine.trigger("listen", {})
    assert wf is not None
    await until(lambda: RUNS)
    await engine.data_received({"n": 1}, topic="news")
    await engine.data_received({"n": 2}, topic="news")
    await asyncio.to_thread(store.writing.wait, 10)
    for _ in range(20):
        await asyncio.sleep(0)
    assert GOT == []  # written, not committed: the task has nothing yet
    store.release.set()
    await asyncio.wait_for(wf, 10)
    assert GOT == [(1, 1), (1, 2)]
    await asyncio.wait_for(engine.stop(), 10)


async def test_events_stay_in_order_when_one_is_refused(waiter: str, caplog: pytest.LogCaptureFixture) -> None:
    """An event that cannot be stored fails the task, as outputs that cannot be: none behind it overtakes it."""
    store = HeldStore()
    engine = Engine(store=store)
    await engine.load(listening(waiter))
    wf = await engine.trigger("listen", {})
    assert wf is not None
    await until(lambda: RUNS)
    await engine.data_received({"n": 1}, topic="news")
    await engine.data_received({"n": 2, "bad": object()}, topic="news")
    await engine.data_received({"n": 3}, topic="news")
    await asyncio.to_thread(store.writing.wait, 10)
    store.release.set()
    await asyncio.wait_for(wf, 10)
    # Event 1 was handed over first (the task failed before it read it); event 3 never was.
    queue = wf.tasks_by_id["w"].queue
    assert [queue.get_nowait().data["n"] for _ in range(queue.qsize())] == [1]
    entry = wf.report()["tasks"][0]["exec"]
    assert entry["state"] == "exception"
    assert "an event it received (dict on topic 'news') cannot be stored" in entry["error"]
    await asyncio.wait_for(engine.stop(), 10)
    assert store.load(wf.uid)["tasks"][0]["exec"]["state"] == "exception"
    assert "cannot be recorded" in caplog.text


async def test_a_new_attempt_gets_no_event_of_the_earlier_one_even_after_a_crash(waiter: str) -> None:
    store = MemoryStore()
    engine = Engine(store=store)
    await engine.load(listening(waiter, retry={"max_attempts": 2, "delay": 0}))
    wf = await engine.trigger("listen", {})
    assert wf is not None
    await until(lambda: RUNS)
    await engine.data_received({"n": 1}, topic="news")
    await engine.data_received({"n": -1}, topic="news")  # the first attempt fails
    await until(lambda: len(RUNS) == 2)
    await engine.data_received({"n": 2}, topic="news")
    await until(lambda: len(GOT) == 3)
    await engine.flush()
    freeze(store)
    await asyncio.wait_for(engine.stop(force=True), 10)
    thaw(store)
    assert [p[0]["n"] for _, p in store.task_events(wf.uid)["w"]] == [2]

    again = Engine(store=store)
    await again.load(listening(waiter, retry={"max_attempts": 2, "delay": 0}))
    [resumed] = await again.recover()
    await until(lambda: len(GOT) == 4)
    await again.data_received({"n": 3}, topic="news")
    await again.data_received({"n": 4}, topic="news")
    await asyncio.wait_for(resumed, 10)
    # Attempt 2 in the first process got 2; its re-run gets 2 again, then the new ones.
    assert GOT == [(1, 1), (1, -1), (2, 2), (3, 2), (3, 3), (3, 4)]
    assert resumed.tasks_by_id["w"].outputs == {"got": [2, 3, 4]}
    await asyncio.wait_for(again.stop(), 10)


async def test_execution_events_reach_a_listening_task_at_once_and_are_not_journaled(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    seen: list[Any] = []

    async def everything(event: Event) -> None:
        task = asyncio.current_task()
        while True:
            got = await task.queue.get()  # type: ignore[union-attr]
            seen.append(got.data.get("type", got.data))
            if got.data == {"stop": True}:
                return

    name = task_name("everything")
    registered(name, everything)
    store = MemoryStore()
    engine = Engine(store=store)
    await engine.load(template([("all", name, {"topics": None})], {}, id="all", topics=[]))
    wf = await engine.trigger("all", {})
    assert wf is not None
    await until(lambda: seen)  # its own task-begin (an execution event, with a source): not journaled
    await engine.data_received({"stop": True}, topic="anything")
    await asyncio.wait_for(wf, 10)
    await asyncio.wait_for(engine.stop(), 10)
    [(seq, (data, topic, source))] = store.task_events(wf.uid)["all"]
    assert (seq, data, topic, source) == (1, {"stop": True}, "anything", None)


def test_replay_skips_lost_events_and_refuses_damaged_ones(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        journal = Journal(MemoryStore(), loop)
        where = ["t", "x", "a", "ta"]
        journal.replay("x", {"w": [(1, LOST_EVENT), (2, [{"n": 2}, "news", where])], "v": []})
        assert [(e.data, e.topic, e.source) for e in journal._replay["x"]["w"]] == [
            ({"n": 2}, "news", EventSource(*where))
        ]
        assert "event 1 was not stored" in caplog.text
        journal.replayed("x")
        assert journal._replay == {}
        with pytest.raises(DamagedRecordError, match="task w: event 3 cannot be rebuilt"):
            journal.replay("y", {"w": [(3, ["not a dict", None, None])]})
    finally:
        loop.close()


def test_stored_events_are_read_back_or_named_when_damaged() -> None:
    codec = JSONSerializer()
    rows = [("w", 2, '[{"n":2},null,null]', None), ("w", 1, None, "refused"), ("w", 0, None, None)]
    assert task_events(codec, "x", rows) == {"w": [(1, LOST_EVENT), (2, [{"n": 2}, None, None])]}
    with pytest.raises(DamagedRecordError, match="task w: event 1 cannot be read"):
        task_events(codec, "x", [("w", 1, "{", None)])
    with pytest.raises(DamagedRecordError, match=r"event 1 must be \[data, topic, source, \(id\)\]"):
        task_events(codec, "x", [("w", 1, "{}", None)])
    with pytest.raises(DamagedRecordError, match="event 1 must be"):
        task_events(codec, "x", [("w", 1, "[1, 2, 3, 4, 5]", None)])
    # An event of a store the nodes share keeps its id; a mark says where the shared events stood.
    shared = [("w", 1, '["listening", 3, 4, ["a"]]', None), ("w", 2, '[{"n": 2}, "news", null, 7]', None)]
    assert task_events(codec, "x", shared) == {"w": [(1, ["listening", 3, 4, ["a"]]), (2, [{"n": 2}, "news", None, 7])]}
    assert Store.task_events(MemoryStore(), "x") == {}  # a store that keeps no events


class PickyStore(MemoryStore):
    """Refuses any event record holding data (as a database refuses a value too large for it)."""

    def write(self, records: Sequence[Record]) -> None:
        if any(isinstance(r, TaskEventRecord) and r.data is not None for r in records):
            raise ValueError("too big")
        super().write(records)


def test_an_event_the_store_refuses_alone_is_kept_as_lost(caplog: pytest.LogCaptureFixture) -> None:
    store = PickyStore()
    event = TaskEventRecord("x", "w", 1, '[{"n":1},null,null]')
    [(field, smaller)] = list(_smaller(event, "{}", ValueError("too big")))
    assert field == "event"
    assert smaller.data is None
    assert "task w of workflow x: event 1 cannot be stored: ValueError: too big" in (smaller.error or "")
    with caplog.at_level(logging.ERROR):
        write_all(store, [event], "{}")
    assert store.task_events("x") == {"w": [(1, LOST_EVENT)]}
    assert "workflow x, task w: the event could not be stored" in caplog.text


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """``shared()``: a new store on one shared journal (SQLite file or PostgreSQL schema), closed at the end."""
    made: list[Any] = []
    dsn_schema = request.getfixturevalue("pg_schema") if request.param == "postgres" else None

    def new() -> Any:
        if dsn_schema is None:
            made.append(SQLiteStore(tmp_path / "shared.db"))
        else:
            made.append(PostgresStore(dsn_schema[0], schema=dsn_schema[1]))
        return made[-1]

    yield new
    for store in made:
        store.close()


def test_events_of_an_execution_another_node_owns_are_refused(shared: Callable[[], Any]) -> None:
    owner, other = shared(), shared()
    refused: list[str] = []
    for store, name in ((owner, "owner"), (other, "other")):
        store.attach(name, lease=30)
        store.join()
    other.on_fenced = refused.extend
    owner.write([ExecutionRecord("x", "t", "pending", "2026-01-01T00:00:00+00:00", template="{}", event="{}")])
    event = '[{"n":1},"news",null]'
    other.write([TaskEventRecord("x", "w", 1, event)])
    assert refused == ["x"]
    assert other.task_events("x") == {}
    owner.write([TaskEventRecord("x", "w", 1, event), TaskEventRecord("x", "w", 2, event)])
    assert [seq for seq, _ in owner.task_events("x")["w"]] == [1, 2]
    # A new attempt's mark forgets the earlier events, even those of the same batch.
    owner.write(
        [TaskEventRecord("x", "w", 3, event), TaskEventRecord("x", "w", 4, None), TaskEventRecord("x", "w", 5, event)]
    )
    assert [seq for seq, _ in owner.task_events("x")["w"]] == [5]


def test_a_store_written_without_a_node_keeps_events_too(shared: Callable[[], Any]) -> None:
    store = shared()
    event = '[{"n":1},"news",null]'
    store.write([ExecutionRecord("x", "t", "pending", "2026-01-01T00:00:00+00:00", template="{}", event="{}")])
    store.write([TaskEventRecord("x", "w", 1, event), TaskEventRecord("x", "v", 1, None, "refused")])
    assert store.task_events("x") == {"w": [(1, [{"n": 1}, "news", None])], "v": [(1, LOST_EVENT)]}
    store.write([TaskEventRecord("x", "w", 2, None)])
    assert store.task_events("x") == {"v": [(1, LOST_EVENT)]}
