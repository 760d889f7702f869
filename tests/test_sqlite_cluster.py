"""Several engines on one SQLite file: ownership, a crashed node known dead at once, leases, fencing."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from support import template

from tukio import Engine, Event, WorkflowTemplate
from tukio.cluster import LeasedStore
from tukio.store import SQLiteStore
from tukio.store.base import ExecutionRecord, TaskRecord
from tukio.store.sqlite import _MIGRATIONS, SCHEMA_VERSION

HERE = Path(__file__).resolve().parent
WORKER = HERE / "sqlite_cluster_worker.py"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc).isoformat()
COUNT = 20


def begin(exec_id: str, template_id: str = "tpl") -> ExecutionRecord:
    return ExecutionRecord(exec_id, template_id, "pending", NOW, template="{}", event="{}")


def task_end(exec_id: str, task_id: str = "a") -> TaskRecord:
    return TaskRecord(exec_id, task_id, f"{exec_id}-{task_id}", "finished", NOW, NOW, '{"outputs":{}}')


def rows(path: Path, query: str, *params: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        return db.execute(query, params).fetchall()
    finally:
        db.close()


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Callable[[], SQLiteStore]]:
    """``stores()``: a new store on one shared file, closed at the end."""
    made: list[SQLiteStore] = []

    def new() -> SQLiteStore:
        made.append(SQLiteStore(tmp_path / "shared.db"))
        return made[-1]

    yield new
    for store in made:
        store.close()


def node(store: SQLiteStore, name: str, lease: float = 30.0) -> list[str]:
    """Attach and join `store` as node `name`; return the list its refused execution ids go to."""
    refused: list[str] = []
    store.attach(name, lease=lease)
    store.join()
    store.on_fenced = refused.extend
    return refused


# -- the store on its own --------------------------------------------------------------------
def test_a_store_is_a_leased_store_that_shares_events_through_the_file(stores: Callable[[], SQLiteStore]) -> None:
    store, other = stores(), stores()
    assert isinstance(store, LeasedStore)
    assert store.event_cursor() == 0
    node(store, "a")
    assert store.publish({"x": 0}, "t") == 0  # alone on the file: nothing to share, nothing kept
    assert store.event_cursor() == 0
    node(other, "b")
    first = store.publish({"x": 1}, "t")
    assert store.publish({"big": "y" * 300_000}, None) == first + 1  # payloads of any size
    assert other.publish({"x": 3}, "t") == first + 2
    assert other.event_cursor() == first + 2
    # Each node reads the events of the others, in order, from its cursor.
    assert other.events_after(0) == [(first, "a", "t", {"x": 1}), (first + 1, "a", None, {"big": "y" * 300_000})]
    assert store.events_after(first) == [(first + 2, "b", "t", {"x": 3})]
    assert store.events_after(first + 2) == []
    assert store.listen(lambda: None) is False  # no signal between processes: they poll
    assert store.prune_events(3600) == 0
    assert store.prune_events(0) == 3
    assert store.event_cursor() == first + 2  # ids never go back, even once every event is pruned
    assert other.publish({"x": 4}, "t") == first + 3
    with pytest.raises(TypeError, match="not JSON serializable"):
        store.publish({"x": object()}, "t")
    with pytest.raises(ValueError, match="event_poll must be a positive"):
        SQLiteStore(store.path, event_poll=0)


def test_a_live_node_keeps_its_executions_and_a_closed_one_is_dead_at_once(stores: Callable[[], SQLiteStore]) -> None:
    a, b = stores(), stores()
    node(a, "a")
    a.write([begin("e1"), task_end("e1")])
    node(b, "b")
    assert b.claim(["tpl"]) == []  # a's lock is held and its lease runs
    assert [i.exec_id for i in a.owned()] == ["e1"]
    a.close()  # as if its process died: the lock is free, the lease still runs
    assert [i.exec_id for i in b.claim(["tpl"])] == ["e1"]
    assert [i.exec_id for i in b.owned()] == ["e1"]
    assert rows(b_path(b), "SELECT owner, epoch FROM executions") == [("b", 1)]


def b_path(store: SQLiteStore) -> Path:
    return Path(store.path)


def test_a_paused_node_loses_to_its_lease_and_its_writes_are_fenced(
    stores: Callable[[], SQLiteStore], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = stores(), stores()
    refused = node(a, "a")
    a.write([begin("e1"), begin("e2")])
    node(b, "b")
    # a still holds its lock (a paused process does), but its lease ran out: the lease wins.
    rows(b_path(b), "UPDATE nodes SET expires = 0 WHERE name = 'a'")
    assert sorted(i.exec_id for i in b.claim(["tpl"], limit=1)) == ["e1"]  # one claim, at most `limit`
    assert a.heartbeat() == "late"
    assert a.lost(["e1", "e2"]) == ["e1"]
    a.write([task_end("e1"), task_end("e2")])  # the thread's path
    assert refused == ["e1"]
    assert a.write_nowait([task_end("e1", "b")])  # the loop's path
    assert refused == ["e1", "e1"]
    assert rows(b_path(b), "SELECT exec_id, task_id FROM tasks ORDER BY exec_id") == [("e2", "a")]
    assert "node a no longer owns 1 execution(s): writes refused" in caplog.text
    assert a.heartbeat() == "alive"
    assert b.claim(["tpl"]) == []  # a is alive again, and keeps e2


def test_a_name_still_locked_by_a_leftover_process_joins_after_a_while(
    stores: Callable[[], SQLiteStore], caplog: pytest.LogCaptureFixture
) -> None:
    old, new = stores(), stores()
    node(old, "r")
    node(new, "r")  # old (paused, say) holds the lock: new goes on without it, and fences old
    assert "another process holds its lock" in caplog.text
    assert old.heartbeat() == "replaced"  # and old lets the lock go
    assert new.heartbeat() == "alive"  # new takes it now
    third = stores()
    third.attach("x")
    third.join()
    assert third._locked("r")
    assert not third._locked("nobody")


# -- the schema -------------------------------------------------------------------------------
def test_an_old_file_is_migrated_in_place_and_recovered(
    tmp_path: Path, registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    name = task_name("migrated")

    async def step(event: Event) -> dict[str, Any]:
        return {**event.data, "step": True}

    registered(name, step)
    chain = template([("a", name), ("b", name)], {"a": ["b"]}, id="old-chain")
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_MIGRATIONS[0])  # the tables of a file made before schema versions
    # As a release before template versions wrote them (a full template copy per execution).
    db.execute(
        "INSERT INTO executions (exec_id, template_id, state, started, template, event) VALUES (?, ?, ?, ?, ?, ?)",
        ("x1", "old-chain", "pending", NOW, json.dumps(chain.as_dict()), '{"n":1}'),
    )
    db.execute(
        "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
        ("x1", "a", "x1-a", "finished", NOW, NOW, '{"inputs":{"n":1},"outputs":{"n":1,"a":true}}'),
    )
    db.close()

    async def recover() -> list[str]:
        with SQLiteStore(path) as store:
            engine = Engine(store=store, node="new")
            await engine.load(chain)
            resumed = await engine.recover()
            await asyncio.wait_for(asyncio.gather(*resumed), 10)
            await asyncio.wait_for(engine.stop(), 10)
            return [wf.uid for wf in resumed]

    assert asyncio.run(recover()) == ["x1"]
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(path, "SELECT state, owner FROM executions") == [("finished", "new")]
    assert rows(path, "SELECT name, epoch FROM nodes") == [("new", 1)]
    SQLiteStore(path).close()  # opening a migrated file again changes nothing
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_a_file_from_a_newer_tukio_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    SQLiteStore(path).close()
    rows(path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer than this tukio knows"):
        SQLiteStore(path)


# -- engines in processes -----------------------------------------------------------------------
class Workers:
    """Worker processes on one file; stopped by PID at the end."""

    def __init__(self, tmp: Path) -> None:
        self.db, self.side, self.tmp = tmp / "journal.db", tmp / "ran.txt", tmp
        self.procs: list[subprocess.Popen[str]] = []
        SQLiteStore(self.db).close()  # created and migrated before the workers race

    def start(self, node: str, count: int, delay: float, lease: float = 30.0) -> subprocess.Popen[str]:
        log = open(self.tmp / f"{node}.log", "w")  # noqa: SIM115 - the child writes it
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(self.db), str(self.side), node, str(lease), str(count), str(delay)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONPATH": str(HERE)},
        )
        log.close()
        self.procs.append(proc)
        return proc

    def line(self, proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        return proc.stdout.readline().strip()

    def finish(self, node: str) -> int:
        """Run a node that recovers what it may, finishes it and exits; return how many it resumed."""
        proc = self.start(node, -1, 0.0)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, (self.tmp / f"{node}.log").read_text()
        return int(out.split()[-1])

    def ran(self) -> Counter[tuple[str, str]]:
        lines = self.side.read_text().splitlines() if self.side.exists() else []
        return Counter((e, t) for e, t, _ in (line.split() for line in lines))

    def recorded_done(self) -> set[tuple[str, str]]:
        return set(rows(self.db, "SELECT exec_id, task_id FROM tasks WHERE state = 'finished'"))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    made = Workers(tmp_path)
    yield made
    made.stop()


@pytest.mark.slow
def test_recover_beside_a_live_node_takes_nothing_and_a_killed_node_is_taken_over_at_once(workers: Workers) -> None:
    a = workers.start("a", COUNT, delay=120.0)  # every workflow stays in its first task
    assert workers.line(a) == "RECOVERED 0"
    assert workers.line(a) == "READY"
    assert workers.finish("b") == 0  # a lives: its executions are left alone
    assert rows(workers.db, "SELECT DISTINCT owner, state FROM executions") == [("a", "pending")]
    os.kill(a.pid, signal.SIGKILL)
    a.communicate(timeout=10)
    # The lease (30 s) has not run out: the lock a's process held tells it is dead.
    assert workers.finish("c") == COUNT
    assert rows(workers.db, "SELECT DISTINCT owner, state FROM executions") == [("c", "finished")]
    ran = workers.ran()
    assert len(ran) == COUNT * 3
    assert {k: v for k, v in ran.items() if v != 1} == {k: 2 for k in ran if k[1] == "t0"}  # its end never came


@pytest.mark.slow
def test_a_node_killed_mid_run_no_task_whose_end_was_committed_runs_again(workers: Workers) -> None:
    a = workers.start("a", 60, delay=0.005)
    assert workers.line(a) == "RECOVERED 0"
    assert workers.line(a) == "READY"
    os.kill(a.pid, signal.SIGKILL)
    a.communicate(timeout=10)
    done = workers.recorded_done()
    unfinished = rows(workers.db, "SELECT count(*) FROM executions WHERE state = 'pending'")[0][0]
    assert workers.finish("b") == unfinished
    assert rows(workers.db, "SELECT DISTINCT state FROM executions") == [("finished",)]
    ran = workers.ran()
    assert all(ran[key] == 1 for key in done)
    assert len(ran) == 60 * 3


async def test_two_engines_in_one_process_own_their_workflows(
    stores: Callable[[], SQLiteStore], registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    gate = asyncio.Event()
    started = asyncio.Event()
    runs: Counter[str] = Counter()

    async def step(event: Event) -> dict[str, Any]:
        tid = asyncio.current_task().template.uid  # type: ignore[union-attr]
        runs[tid] += 1
        if tid == "a":
            started.set()
            await gate.wait()
        return {**event.data, tid: True}

    name = task_name("two-engines")
    registered(name, step)
    chain: WorkflowTemplate = template([("a", name), ("b", name)], {"a": ["b"]}, id="two")
    a = Engine(store=stores(), node="a")
    b = Engine(store=stores(), node="b")
    await a.load(chain)
    await b.load(chain)
    wf = await a.trigger("two", {})
    assert wf is not None
    await asyncio.wait_for(started.wait(), 10)
    await a.flush()
    assert await b.recover() == []
    assert b.unrecovered == []
    gate.set()
    await asyncio.wait_for(wf, 10)
    await asyncio.wait_for(asyncio.gather(a.stop(), b.stop()), 10)
    assert runs == Counter({"a": 1, "b": 1})


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll another process's progress (bounded)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_paused_node_loses_its_workflows_at_its_lease_and_is_fenced_when_it_comes_back(workers: Workers) -> None:
    a = workers.start("a", 10, delay=1.5, lease=0.5)  # every workflow sits in t0 for 1.5 s
    assert workers.line(a) == "RECOVERED 0"
    assert workers.line(a) == "READY"
    os.kill(a.pid, signal.SIGSTOP)  # it still holds its lock: only its lease can tell
    b = workers.start("b", 0, delay=0.0, lease=0.5)
    assert workers.line(b) in ("RECOVERED 0", "RECOVERED 10")
    assert workers.line(b) == "READY"

    def b_finished_all() -> bool:
        return rows(workers.db, "SELECT DISTINCT owner, state FROM executions") == [("b", "finished")]

    wait_until(b_finished_all)
    os.kill(a.pid, signal.SIGCONT)  # its t0 ends now: the writes are refused, its copies cancelled
    wait_until(lambda: "workflow cancelled on node a" in (workers.tmp / "a.log").read_text())
    assert b_finished_all()
    done = rows(workers.db, "SELECT task_id, data FROM tasks")
    assert len(done) == 30
    assert {json.loads(data)["outputs"][tid] for tid, data in done} == {"b"}  # nothing of a's was recorded
    assert {tid for (_, tid), n in workers.ran().items() if n == 2} == {"t0"}  # a's t0 ran again on b, once
    assert "Traceback" not in (workers.tmp / "a.log").read_text()


async def test_data_received_reaches_the_listening_tasks_of_every_process_once(
    stores: Callable[[], SQLiteStore], registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    """Two engines on two threads, each with its own connections to the file, as two processes would be."""
    got: dict[str, list[int]] = {"a": [], "b": []}

    async def listener(event: Event) -> dict[str, Any]:
        task = asyncio.current_task()
        mine = got[task.template.config["node"]]  # type: ignore[union-attr]
        while True:
            seen = await task.queue.get()  # type: ignore[union-attr]
            if seen.data.get("stop"):
                return {"got": mine}
            mine.append(seen.data["n"])

    name = task_name("file-listener")
    registered(name, listener)

    def listening(node: str) -> WorkflowTemplate:
        return template([("w", name, {"topics": ["news"], "config": {"node": node}})], {}, id=f"l-{node}", topics=[])

    other_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=other_loop.run_forever, name="engine-b", daemon=True)
    thread.start()

    def there(coro: Any) -> Any:
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, other_loop))

    async def start_b() -> tuple[Engine, Any]:
        engine = Engine(store=stores(), node="b", lease=30)
        await engine.load(listening("b"))
        return engine, await engine.trigger("l-b", {})

    async def reached(check: Callable[[], bool]) -> None:
        deadline = asyncio.get_running_loop().time() + 10
        while not check():
            assert asyncio.get_running_loop().time() < deadline, "condition never became true"
            await asyncio.sleep(0.01)

    try:
        b, wf_b = await there(start_b())
        a = Engine(store=stores(), node="a", lease=30)
        await a.load(listening("a"))
        wf_a = await a.trigger("l-a", {})
        assert wf_a is not None
        await reached(lambda: "w" in wf_a.tasks_by_id and "w" in wf_b.tasks_by_id)
        await a.data_received({"n": 1}, topic="news")
        await there(b.data_received({"n": 2}, topic="news"))
        await a.data_received({"n": 3}, topic="news")
        await a.data_received({"n": 4}, topic="elsewhere")  # nobody listens to that topic
        await reached(lambda: len(got["a"]) == 3 and len(got["b"]) == 3)
        await there(b.data_received({"stop": True}, topic="news"))
        await asyncio.wait_for(wf_a, 10)
        await asyncio.wait_for(there(_wait(wf_b)), 10)
        # Each task got each event once: its own node's at once, the other's through the file.
        assert sorted(got["a"]) == sorted(got["b"]) == [1, 2, 3]
        await asyncio.wait_for(a.stop(), 10)
        await asyncio.wait_for(there(_stopped(b)), 10)
    finally:
        other_loop.call_soon_threadsafe(other_loop.stop)
        thread.join(10)
        other_loop.close()


async def _wait(future: Any) -> None:
    await future


async def _stopped(engine: Engine) -> None:
    await engine.stop()


def test_a_killed_nodes_task_is_taken_over_with_the_events_it_got_through_the_file(
    tmp_path: Path, registered: Callable[..., Any]
) -> None:
    """A process's task gets two events another process received, is SIGKILLed; the re-run gets both, then a third."""
    from events_worker import TEMPLATE

    db = tmp_path / "journal.db"
    SQLiteStore(db).close()
    got: list[int] = []

    async def wait_for_events(event: Event) -> dict[str, Any]:
        queue = asyncio.current_task().queue  # type: ignore[union-attr]
        while len(got) < 3:
            got.append((await queue.get()).data["n"])
        return {"got": list(got)}

    registered("ev-wait", wait_for_events)
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - the child writes it
    worker = subprocess.Popen(
        [sys.executable, str(HERE / "events_worker.py"), str(db), "worker"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "PYTHONPATH": str(HERE)},
    )
    log.close()

    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x.strip()) for x in worker.stdout or ()], daemon=True)
    reader.start()

    def line() -> str:
        try:
            return lines.get(timeout=30)
        except queue.Empty:
            raise AssertionError(f"worker silent: {(tmp_path / 'worker.log').read_text()}") from None

    async def scenario() -> None:
        with SQLiteStore(db, event_poll=0.02) as store:
            engine = Engine(store=store, node="main", lease=30)
            await engine.load(TEMPLATE)
            assert await asyncio.to_thread(line) == "READY"
            await engine.data_received({"n": 1}, topic="news")
            await engine.data_received({"n": 2}, topic="news")
            assert [await asyncio.to_thread(line), await asyncio.to_thread(line)] == ["GOT 1", "GOT 2"]
            worker.send_signal(signal.SIGKILL)
            await asyncio.to_thread(worker.wait, 10)
            [wf] = await engine.recover()  # its lock is free: dead at once
            deadline = asyncio.get_running_loop().time() + 10
            while len(got) < 2:
                assert asyncio.get_running_loop().time() < deadline, "the events were not replayed"
                await asyncio.sleep(0.01)
            await engine.data_received({"n": 3}, topic="news")
            await asyncio.wait_for(wf, 10)
            assert wf.tasks_by_id["w"].outputs == {"got": [1, 2, 3]}
            await asyncio.wait_for(engine.stop(), 10)

    try:
        asyncio.run(scenario())
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        reader.join(10)
        assert worker.stdout is not None
        worker.stdout.close()


def test_published_events_alone_keep_the_write_ahead_log_bounded(
    stores: Callable[[], SQLiteStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tukio.store.sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "CHECKPOINT_EVERY", 3)
    store = stores()
    node(store, "a")
    node(stores(), "b")  # someone to share with
    modes: list[str] = []
    real = store._checkpoint_locked
    monkeypatch.setattr(store, "_checkpoint_locked", lambda mode: modes.append(mode) or real(mode))
    for n in range(7):
        store.publish({"n": n}, "t")
    assert modes == ["RESTART", "RESTART"]


async def test_a_cursor_that_cannot_be_read_at_start_is_read_again(
    stores: Callable[[], SQLiteStore], caplog: pytest.LogCaptureFixture
) -> None:
    store = stores()
    calls: list[str] = []
    real = store.event_cursor

    def once_broken() -> int:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return real()

    store.event_cursor = once_broken  # type: ignore[method-assign]
    engine = Engine(store=store, node="a", lease=30)
    assert "reading the events cursor failed" in caplog.text
    deadline = asyncio.get_running_loop().time() + 10
    while len(calls) < 2:  # read again by the task that reads the events, on a thread
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert calls[0] == threading.current_thread().name != calls[1]
    await asyncio.wait_for(engine.stop(), 10)
