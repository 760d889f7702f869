"""A listening task taken over from a dead node gets every event published meanwhile, once (issue 19, item 7).

A process runs a task listening on "news"; it gets two events, then is
SIGKILLed. Two more are published while nobody runs the task. The node that
takes it over resumes it: the re-run gets the two it had received (from the
journal), the two it missed (from the store's events), then a fifth, live;
none twice.
"""

from __future__ import annotations

import asyncio
import functools
import os
import queue
import signal
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import template

from tukio import Engine, Event, Workflow
from tukio.store import SQLiteStore, Store
from tukio.store._catchup import ListenMark, catch_up, read_mark

HERE = Path(__file__).resolve().parent


class Worker:
    """`events_worker.py` in a process of its own, its lines read on a thread; killed by PID at the end."""

    def __init__(self, db: str, node: str, lease: float, logs: Path) -> None:
        self.logs = logs / f"{node}.log"
        with open(self.logs, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(HERE / "events_worker.py"), db, node, str(lease), "5"],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "PYTHONPATH": str(HERE)},
            )
        self._lines: queue.Queue[str] = queue.Queue()
        out = self.process.stdout
        assert out is not None
        self._reader = threading.Thread(target=lambda: [self._lines.put(x.strip()) for x in out], daemon=True)
        self._reader.start()

    def line(self) -> str:
        try:
            return self._lines.get(timeout=30)
        except queue.Empty:
            raise AssertionError(f"worker silent: {self.logs.read_text()}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture(params=["sqlite", "postgres"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Callable[[], Store], float]]:
    """(what the worker opens, a factory of the same store here, the lease both nodes run with)."""
    if request.param == "sqlite":
        db = tmp_path / "journal.db"
        SQLiteStore(db).close()
        # A SQLite node is dead once its process let go of its lock file: the lease may be long.
        yield str(db), lambda: SQLiteStore(db, event_poll=0.02), 30.0
        return
    from pg import DSN, fresh_schema

    from tukio.store.postgres import PostgresStore

    for _, schema in fresh_schema():
        PostgresStore(DSN, schema=schema).close()
        # On PostgreSQL only the lease tells a node is dead: a short one.
        yield f"pg:{schema}", functools.partial(PostgresStore, DSN, schema=schema), 1.0


def test_a_listening_task_taken_over_gets_the_events_published_while_its_node_was_dead(
    journal: tuple[str, Callable[[], Store], float], tmp_path: Path, registered: Callable[..., Any]
) -> None:
    from events_worker import TEMPLATE

    db, open_store, lease = journal
    got: list[int] = []

    async def wait_for_events(event: Event) -> dict[str, Any]:
        queue = asyncio.current_task().queue  # type: ignore[union-attr]
        while len(got) < 5:
            got.append((await queue.get()).data["n"])
        return {"got": list(got)}

    registered("ev-wait", wait_for_events)
    worker = Worker(db, "worker", lease, tmp_path)

    async def scenario() -> None:
        with open_store() as store:
            engine = Engine(store=store, node="main", lease=lease)
            await engine.load(TEMPLATE)
            assert await asyncio.to_thread(worker.line) == "READY"
            await engine.data_received({"n": 1}, topic="news")
            await engine.data_received({"n": 2}, topic="news")
            assert [await asyncio.to_thread(worker.line) for _ in range(2)] == ["GOT 1", "GOT 2"]
            await asyncio.to_thread(worker.kill)
            # Published while nobody runs the task (its node is dead, not taken over yet).
            await engine.data_received({"n": 3}, topic="news")
            await engine.data_received({"n": 4}, topic="elsewhere")  # not a topic it listens to
            await engine.data_received({"n": 5}, topic="news")
            wf = await _take_over(engine)
            deadline = asyncio.get_running_loop().time() + 10
            while len(got) < 4:
                assert asyncio.get_running_loop().time() < deadline, f"the missed events never came: {got}"
                await asyncio.sleep(0.01)
            await engine.data_received({"n": 6}, topic="news")
            await asyncio.wait_for(wf, 10)
            # Those it had received (the journal's), those it missed (the store's), then the new one.
            assert wf.tasks_by_id["w"].outputs == {"got": [1, 2, 3, 5, 6]}
            await asyncio.wait_for(engine.stop(), 10)

    try:
        asyncio.run(scenario())
    finally:
        worker.kill()


async def _take_over(engine: Engine) -> Workflow:
    """The worker's workflow, once this engine took it over (its lease must run out first on PostgreSQL).

    By `recover()`, or by the engine's own look for dead nodes' work, whichever comes first.
    """
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        resumed = await engine.recover() or engine.running("ev")
        if resumed:
            [wf] = resumed
            return wf
        assert asyncio.get_running_loop().time() < deadline, "the dead worker's workflow was never taken over"
        await asyncio.sleep(0.1)


def test_a_journaled_mark_reads_back_and_a_damaged_one_is_named() -> None:
    mark = ListenMark(7, 9, ("a", "b"))
    assert read_mark(["listening", 7, 9, ["a", "b"]]) == mark
    assert read_mark([{"n": 1}, "news", None, 3]) is None  # an event
    with pytest.raises(ValueError, match="listening mark"):
        read_mark(["listening", "seven"])


def test_a_mark_covers_the_events_its_task_was_listening_for() -> None:
    mark = ListenMark(read=10, published=20, local=("here",))
    assert mark.covers(11, "there")
    assert not mark.covers(10, "there")
    assert mark.covers(21, "here")
    assert not mark.covers(15, "here")  # dispatched here before it listened


async def test_a_task_catching_up_gets_the_missed_events_first_and_no_event_twice(
    registered: Callable[..., Any],
) -> None:
    """New events wait until the missed ones are read; a copy of one it got (same id) is dropped."""
    got: list[int] = []
    release = threading.Event()

    async def listen(event: Event) -> dict[str, Any]:
        queue = asyncio.current_task().queue  # type: ignore[union-attr]
        while len(got) < 4:
            got.append((await queue.get()).data["n"])
        return {}

    registered("catch-up-listener", listen)
    engine = Engine()
    await engine.load(template([("w", "catch-up-listener", {"topics": ["news"]})], {}, id="cu", topics=[]))
    wf = await engine.trigger("cu", {})
    assert wf is not None
    task = wf.tasks_by_id["w"]  # (the root starts with the workflow)

    def fetch(after: int) -> list[tuple[int, str | None, str | None, Any]]:
        release.wait(10)
        stored = [(2, "a", "news", {"n": 2}), (3, "a", "other", {"n": 3}), (4, "b", "news", {"n": 4})]
        return [row for row in stored if row[0] > after]

    catch_up(task, ListenMark(read=1, published=1, local=("b",)), [1], fetch)

    def live(n: int, event_id: int | None) -> None:
        event = Event({"n": n}, topic="news")
        event._id = event_id
        task.deliver(event)

    live(1, 1)  # one it got before its node died: dropped
    live(4, 4)  # read late by this node's reader: held, then dropped (the store's copy comes first)
    live(5, 5)
    live(6, None)  # an event without an id is never taken for a copy
    live(5, 5)
    await asyncio.sleep(0.01)
    assert got == []  # held while the missed ones are read
    release.set()
    await asyncio.wait_for(wf, 10)
    assert got == [2, 4, 5, 6]
    await engine.stop()


async def test_a_catch_up_that_cannot_read_the_store_hands_over_what_it_held(
    registered: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    got: list[int] = []

    async def listen(event: Event) -> dict[str, Any]:
        queue = asyncio.current_task().queue  # type: ignore[union-attr]
        while len(got) < 1:
            got.append((await queue.get()).data["n"])
        return {}

    registered("catch-up-failing", listen)
    engine = Engine()
    await engine.load(template([("w", "catch-up-failing", {"topics": ["news"]})], {}, id="cf", topics=[]))
    wf = await engine.trigger("cf", {})
    assert wf is not None
    release = threading.Event()

    def fetch(after: int) -> list[tuple[int, str | None, str | None, Any]]:
        release.wait(10)
        raise ConnectionError("the database is gone")

    catch_up(wf.tasks_by_id["w"], ListenMark(read=0, published=0, local=()), [], fetch)
    event = Event({"n": 7}, topic="news")
    event._id = 7
    wf.tasks_by_id["w"].deliver(event)  # held while the missed ones are read
    release.set()
    await asyncio.wait_for(wf, 10)
    assert got == [7]
    assert "the events it missed could not be read" in caplog.text
    await engine.stop()


def test_a_mark_waits_for_the_first_cursor_of_the_loops_reader() -> None:
    from tukio import cluster

    loop = asyncio.new_event_loop()
    try:
        marks: list[ListenMark] = []
        cluster.listen_mark(loop, marks.append)
        assert marks == []  # no engine of this loop reads the shared events: no mark
        reader = types.SimpleNamespace(read=None, _on_read=[])
        cluster._listeners[loop] = reader  # type: ignore[assignment]
        cluster._published[loop] = 4
        cluster.listen_mark(loop, marks.append)
        assert marks == []  # its first read of the store's cursor is on its way
        reader.read = 9
        for call in reader._on_read:
            call()
        assert marks == [ListenMark(read=9, published=4, local=())]
    finally:
        cluster._listeners.pop(loop, None)
        loop.close()


async def test_data_received_dispatches_here_even_when_its_caller_stops_waiting_for_the_store(
    tmp_path: Path,
) -> None:
    from tukio.broker import get_broker

    got: list[Event] = []
    publishing, release = threading.Event(), threading.Event()
    with SQLiteStore(tmp_path / "j.db") as store:
        engine = Engine(store=store, node="here", lease=30)
        publish = store.publish

        def slow_publish(data: Any, topic: str | None) -> int:
            publishing.set()
            release.wait(10)
            return publish(data, topic)

        store.publish = slow_publish  # type: ignore[method-assign]
        get_broker().register(got.append, "news")
        try:
            sending = asyncio.ensure_future(engine.data_received({"n": 1}, topic="news"))
            assert await asyncio.to_thread(publishing.wait, 10)
            assert got == []  # kept for the other nodes first
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending
            assert [e.data for e in got] == [{"n": 1}]  # dispatched here all the same
        finally:
            release.set()
            get_broker().unregister(got.append, "news")
            await engine.stop()


async def test_a_task_listening_before_the_events_cursor_is_read_gets_its_mark_once_it_is(
    pg_schema: tuple[str, str], registered: Callable[..., Any]
) -> None:
    """PostgreSQL reads a node's events cursor in the background: the mark waits for it, then is written."""
    from tukio.store.postgres import PostgresStore

    dsn, schema = pg_schema
    registered("mark-waits", _wait_forever)
    cursor_asked, cursor_given = threading.Event(), threading.Event()
    with PostgresStore(dsn, schema=schema) as store:
        event_cursor = store.event_cursor

        def slow_cursor() -> int:
            cursor_asked.set()
            cursor_given.wait(10)
            return event_cursor()

        store.event_cursor = slow_cursor  # type: ignore[method-assign]
        engine = Engine(store=store, node="early", lease=30)
        await engine.load(template([("w", "mark-waits", {"topics": ["news"]})], {}, id="mw", topics=[]))
        wf = await engine.trigger("mw", {})
        assert wf is not None
        assert await asyncio.to_thread(cursor_asked.wait, 10)
        await engine.flush()

        def marks() -> list[Any]:
            return [p for _, p in store.task_events(wf.uid).get("w", []) if read_mark(p) is not None]

        assert await asyncio.to_thread(marks) == []  # where the events stand is not known yet
        cursor_given.set()
        deadline = asyncio.get_running_loop().time() + 10
        while not await asyncio.to_thread(marks):
            assert asyncio.get_running_loop().time() < deadline, "the mark was never written"
            await asyncio.sleep(0.02)
        wf.cancel()
        await engine.stop()


async def _wait_forever(event: Event) -> None:
    await asyncio.Event().wait()
