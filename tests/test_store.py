"""Stores, the engine's journal, and recovery of unfinished workflows."""

from __future__ import annotations

import asyncio
import json
import pickle
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from support import template

import tukio.store.journal as journal_module
import tukio.store.sqlite as sqlite_store
from tukio import Engine, Event, JoinTask, WorkflowTemplate
from tukio.cli import main as cli_main
from tukio.errors import JournalError
from tukio.store import MemoryStore, PostgresStore, SQLiteStore, Store
from tukio.store.base import JSONSerializer, Record, TaskRecord

RUNS: Counter[str] = Counter()
GATES: dict[str, asyncio.Event] = {}
SEEN: dict[str, Any] = {}


class FreezableStore(MemoryStore):
    """A memory store that can stop writing, as if the process had died."""

    frozen = False

    def write(self, records: Sequence[Record]) -> None:
        if not self.frozen:
            super().write(records)


class PickleSerializer:
    def dumps(self, value: Any) -> bytes:
        return pickle.dumps(value)

    def loads(self, data: str | bytes) -> Any:
        assert isinstance(data, bytes)
        return pickle.loads(data)


@pytest.fixture(params=["memory", "sqlite", "sqlite-full", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each way the journal writes: on the loop (memory, SQLite) or from its thread (SQLite FULL, PostgreSQL)."""
    made: Store
    if request.param == "memory":
        made = MemoryStore()
    elif request.param == "sqlite":
        made = SQLiteStore(tmp_path / "journal.db")
    elif request.param == "postgres":
        dsn, schema = request.getfixturevalue("pg_schema")
        made = PostgresStore(dsn, schema=schema)
    else:
        made = SQLiteStore(tmp_path / "journal.db", synchronous="FULL")
    with made:
        yield made


@pytest.fixture
def step(registered: Callable[..., Any], task_name: Callable[[str], str]) -> str:
    """A task adding its id to the data; it waits on GATES[id] when set; 'freeze' in config freezes the store."""
    RUNS.clear()
    GATES.clear()
    SEEN.clear()

    async def step_task(event: Event) -> dict[str, Any]:
        task = asyncio.current_task()
        tid = task.template.uid  # type: ignore[union-attr]
        RUNS[tid] += 1
        SEEN[tid] = SEEN.get("probe", lambda: None)()
        if tid in GATES:
            await GATES[tid].wait()
        return {**event.data, tid: RUNS[tid]}

    name = task_name("step")
    registered(name, step_task)
    return name


def chain(name: str, uid: str = "chain") -> WorkflowTemplate:
    return template([("a", name), ("b", name), ("c", name)], {"a": ["b"], "b": ["c"]}, id=uid)


def states(report: dict[str, Any]) -> dict[str, str | None]:
    return {t["id"]: (t["exec"] or {}).get("state") for t in report["tasks"]}


async def test_journal_matches_the_report(step: str, store: Store) -> None:
    engine = Engine(store=store)
    await engine.load(chain(step))
    wf = await engine.trigger("chain", {"v": 1})
    assert wf is not None
    await asyncio.wait_for(wf, 5)
    await engine.stop()
    stored = store.load(wf.uid)
    live = wf.report()
    assert stored["exec"]["id"] == wf.uid
    assert stored["exec"]["state"] == "finished"
    assert stored["exec"]["event"] == {"v": 1}
    assert stored["exec"]["start"] <= stored["exec"]["end"]
    for mine, theirs in zip(stored["tasks"], live["tasks"], strict=True):
        assert mine["exec"]["state"] == theirs["exec"]["state"] == "finished"
        assert mine["exec"]["inputs"] == theirs["exec"]["inputs"]
        assert mine["exec"]["outputs"] == theirs["exec"]["outputs"]
        assert mine["exec"]["id"] == theirs["exec"]["id"]
        assert isinstance(mine["exec"]["start"], datetime)
    assert stored["tasks"][2]["exec"]["outputs"] == {"v": 1, "a": 1, "b": 1, "c": 1}
    [info] = store.executions()
    assert (info.exec_id, info.template_id, info.state, info.finished) == (wf.uid, "chain", "finished", True)


async def test_successors_start_after_the_parent_end_is_durable(step: str, store: Store) -> None:
    engine = Engine(store=store)

    def probe() -> dict[str, str | None]:  # what the store holds of the one execution
        [info] = store.executions()
        return states(store.load(info.exec_id))

    SEEN["probe"] = probe
    wf = await engine.run_once(chain(step), {"v": 0})
    assert wf is not None
    await asyncio.wait_for(wf, 5)
    await engine.stop()
    assert SEEN["b"]["a"] == "finished"
    assert SEEN["c"]["b"] == "finished"
    # The trigger was durable before the root started.
    assert SEEN["a"] is not None


async def test_list_filter_and_prune(step: str, store: Store) -> None:
    engine = Engine(store=store)
    GATES["b"] = asyncio.Event()
    done = await engine.run_once(chain(step, "one"), {"v": 0})
    other = await engine.run_once(chain(step, "two"), {"v": 0})
    assert done is not None
    assert other is not None
    for _ in range(1000):
        if RUNS["b"] == 2:
            break
        await asyncio.sleep(0)
    GATES["b"].set()
    await asyncio.wait_for(asyncio.gather(done, other), 5)
    running = await engine.run_once(chain(step, "two"), {"v": 1})
    assert running is not None
    GATES["a"] = asyncio.Event()
    await engine.flush()
    assert {i.template_id for i in store.executions(state="finished")} == {"one", "two"}
    assert [i.exec_id for i in store.executions(template_id="one")] == [done.uid]
    assert [i.exec_id for i in store.unfinished()] == [running.uid]
    assert store.executions(state=[]) == []
    assert store.prune(before=datetime.now(timezone.utc) - timedelta(days=1)) == 0
    assert store.prune(template_id="one") == 1
    assert store.prune() == 1
    assert [i.exec_id for i in store.executions()] == [running.uid]
    with pytest.raises(KeyError, match="no execution"):
        store.load(done.uid)
    await engine.stop(force=True)


async def test_unserializable_outputs_fail_the_task(registered: Callable[..., Any], store: Store) -> None:
    async def bad(event: Event) -> dict[str, Any]:
        return {"when": {1, 2}}

    async def never(event: Event) -> None:
        raise AssertionError("must not start")

    registered("store-bad-outputs", bad)
    registered("store-never", never)
    engine = Engine(store=store)
    tmpl = template([("a", "store-bad-outputs"), ("b", "store-never")], {"a": ["b"]})
    wf = await engine.run_once(tmpl, {"v": 0})
    assert wf is not None
    await asyncio.wait_for(wf, 5)
    await engine.stop()
    for report in (wf.report(), store.load(wf.uid)):
        a = report["tasks"][0]["exec"]
        assert a["state"] == "exception"
        assert "task a" in a["error"]
        assert "outputs (dict)" in a["error"]
        assert "set" in a["error"]
        assert report["tasks"][1]["exec"] is None
    assert store.load(wf.uid)["exec"]["state"] == "finished"


async def test_unserializable_trigger_fails_the_workflow(step: str, store: Store) -> None:
    engine = Engine(store=store)
    wf = await engine.run_once(chain(step), {"v": object()})
    assert wf is not None
    with pytest.raises(JournalError, match=r"triggering data \(dict\) cannot be stored"):
        await asyncio.wait_for(wf, 5)
    await engine.stop()
    assert Counter() == RUNS
    assert store.load(wf.uid)["exec"]["state"] == "exception"


async def test_custom_serializer(step: str, tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "pickled.db", serializer=PickleSerializer()) as store:
        engine = Engine(store=store)
        wf = await engine.run_once(chain(step), {"tags": {"x", "y"}})
        assert wf is not None
        await asyncio.wait_for(wf, 5)
        await engine.stop()
        assert store.load(wf.uid)["tasks"][2]["exec"]["outputs"]["tags"] == {"x", "y"}


async def crash_while(step: str, store: FreezableStore, parked: str, tmpl: WorkflowTemplate) -> str:
    """Run `tmpl` until task `parked` runs, then 'crash': the store stops writing."""
    GATES[parked] = asyncio.Event()
    engine = Engine(store=store)
    await engine.load(tmpl)
    wf = await engine.trigger(tmpl.uid, {"v": 0})  # type: ignore[arg-type]
    assert wf is not None
    for _ in range(10_000):
        if RUNS[parked]:
            break
        await asyncio.sleep(0)
    await engine.flush()
    store.frozen = True
    await engine.stop(force=True)
    store.frozen = False
    del GATES[parked]
    return wf.uid


async def test_recover_runs_what_was_not_recorded_done(step: str) -> None:
    store = FreezableStore()
    uid = await crash_while(step, store, "b", chain(step))
    assert states(store.load(uid)) == {"a": "finished", "b": "pending", "c": None}
    RUNS.clear()
    engine = Engine(store=store)
    await engine.load(chain(step))
    [wf] = await engine.recover()
    assert wf.uid == uid
    assert wf in engine.instances
    await asyncio.wait_for(wf, 5)
    assert Counter({"b": 1, "c": 1}) == RUNS
    assert wf.tasks_by_id["c"].outputs == {"v": 0, "a": 1, "b": 1, "c": 1}
    assert await engine.recover() == []
    await engine.stop()
    assert store.load(uid)["exec"]["state"] == "finished"
    assert store.unfinished() == []


async def test_recover_a_join(step: str) -> None:
    tmpl = template(
        [("r", step), ("x", step), ("y", step), ("j", "join", {"config": {"wait_for": ["x", "y"]}})],
        {"r": ["x", "y"], "x": ["j"], "y": ["j"]},
        id="joined",
    )
    assert JoinTask is not None
    store = FreezableStore()
    uid = await crash_while(step, store, "y", tmpl)
    RUNS.clear()
    engine = Engine(store=store)
    await engine.load(tmpl)
    [wf] = await engine.recover()
    await asyncio.wait_for(wf, 5)
    await engine.stop()
    assert Counter({"y": 1}) == RUNS
    stash = wf.tasks_by_id["j"].outputs["data_stash"]
    assert sorted(sorted(d) for d in stash) == [["r", "v", "x"], ["r", "v", "y"]]
    assert store.load(uid)["exec"]["state"] == "finished"


async def test_recover_when_only_the_trigger_was_recorded(step: str) -> None:
    store = FreezableStore()
    SEEN["probe"] = lambda: setattr(store, "frozen", True)
    engine = Engine(store=store)
    wf = await engine.run_once(chain(step, "early"), {"v": 7})
    assert wf is not None
    await asyncio.wait_for(wf, 5)
    await engine.stop()
    store.frozen = False
    assert states(store.load(wf.uid)) == {"a": None, "b": None, "c": None}
    RUNS.clear()
    SEEN.clear()
    again = Engine(store=store)
    await again.load(chain(step, "early"))
    [back] = await again.recover()
    await asyncio.wait_for(back, 5)
    await again.stop()
    assert back.uid == wf.uid
    assert Counter({"a": 1, "b": 1, "c": 1}) == RUNS
    assert back.tasks_by_id["c"].outputs == {"v": 7, "a": 1, "b": 1, "c": 1}


async def test_unloaded_templates_are_kept_for_later(step: str) -> None:
    store = FreezableStore()
    uid = await crash_while(step, store, "b", chain(step, "later"))
    engine = Engine(store=store)
    assert await engine.recover() == []
    [left] = engine.unrecovered
    assert (left.exec_id, left.template_id, left.state) == (uid, "later", "pending")
    assert [i.exec_id for i in store.unfinished()] == [uid]
    await engine.load(chain(step, "later"))
    [wf] = await engine.recover()
    await asyncio.wait_for(wf, 5)
    assert engine.unrecovered == []
    await engine.stop()


async def test_recover_needs_a_store() -> None:
    engine = Engine()
    assert engine.store is None
    await engine.flush()
    with pytest.raises(RuntimeError, match="no store"):
        await engine.recover()


def test_sqlite_store_uses_wal_and_closes(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    store = SQLiteStore(path)
    probe = sqlite3.connect(path)
    try:
        assert probe.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        probe.close()
    store.close()
    store.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        store.executions()
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(path, synchronous="OFF")


async def test_cli_inspect(step: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cli.db"
    with SQLiteStore(path) as store:
        engine = Engine(store=store)
        wf = await engine.run_once(chain(step), {"v": 0})
        assert wf is not None
        await asyncio.wait_for(wf, 5)
        await engine.stop()
    assert cli_main(["inspect", "--store", str(path)]) == 0
    out = capsys.readouterr().out
    assert "EXEC_ID" in out
    assert f"{wf.uid}  finished  chain" in out
    assert cli_main(["inspect", "--store", str(path), wf.uid]) == 0
    assert '"state": "finished"' in capsys.readouterr().out
    assert cli_main(["inspect", "--store", str(path), "nope"]) == 2
    assert cli_main(["inspect", "--store", str(tmp_path / "missing.db")]) == 2
    assert cli_main(["inspect", "--store", str(path), "--state", "pending"]) == 0
    assert "no executions" in capsys.readouterr().out


def test_durable_service_example_recovers_the_crashed_order() -> None:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-W", "error", str(root / "examples" / "durable_service.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:3] == ["taking order 1", "first life died (exit code 70)", "recovered workflow of order 1"]
    assert lines.count("taking order 1") == 1  # done before the crash: not run again
    assert "charging order 1" in lines
    assert "shipping order 2" in lines
    assert sorted(lines[-2:]) == ["journal: order 1 finished, shipped=True", "journal: order 2 finished, shipped=True"]


class BusyStore(MemoryStore):
    """Refuses the first `busy` writes on the loop; logs which thread wrote each batch."""

    def __init__(self, busy: int) -> None:
        super().__init__()
        self.busy = busy
        self.log: list[tuple[str, int]] = []

    def write_nowait(self, records: Sequence[Record]) -> bool:
        if self.busy:
            self.busy -= 1
            return False
        return super().write_nowait(records)

    def write(self, records: Sequence[Record]) -> None:
        self.log.append((threading.current_thread().name, len(records)))
        super().write(records)


async def test_a_busy_store_is_written_from_the_thread_then_from_the_loop_again(step: str) -> None:
    store = BusyStore(busy=2)
    engine = Engine(store=store)
    wf = await engine.run_once(chain(step), {"v": 0})
    assert wf is not None
    await asyncio.wait_for(wf, 5)
    await engine.stop()
    writers = [name for name, _ in store.log]
    # The trigger and the end of 'a' were refused on the loop: the thread wrote them, in order,
    # and once nothing was left in flight the loop wrote again.
    assert writers[:2] == ["tukio-journal", "tukio-journal"]
    assert set(writers[2:]) == {threading.current_thread().name}
    assert states(store.load(wf.uid)) == {"a": "finished", "b": "finished", "c": "finished"}
    assert store.load(wf.uid)["exec"]["state"] == "finished"


class FailingStore(MemoryStore):
    """Fails `bad` writes (as a full disk would) once the first `good` ones are done."""

    def __init__(self, good: int, bad: int) -> None:
        super().__init__()
        self.good = good
        self.bad = bad
        self.failed = threading.Event()

    def write(self, records: Sequence[Record]) -> None:
        if self.good == 0 and self.bad:
            self.bad -= 1
            self.failed.set()
            raise OSError("disk full")
        self.good = max(self.good - 1, 0)
        super().write(records)


async def test_a_store_fault_makes_the_workflow_wait_then_everything_is_written(
    step: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "RETRY_DELAY", (0.001, 0.002))
    store = FailingStore(good=1, bad=8)  # the trigger is written, then the disk is full for a while
    engine = Engine(store=store)
    wf = await engine.run_once(chain(step), {"v": 0})
    assert wf is not None
    await asyncio.wait_for(wf, 5)
    await asyncio.wait_for(engine.stop(), 5)
    assert store.failed.is_set()
    assert states(wf.report()) == {"a": "finished", "b": "finished", "c": "finished"}
    assert states(store.load(wf.uid)) == {"a": "finished", "b": "finished", "c": "finished"}
    # The end record was retried, not dropped: the execution is not left 'pending'.
    assert store.load(wf.uid)["exec"]["state"] == "finished"
    assert Counter({"a": 1, "b": 1, "c": 1}) == RUNS
    assert "disk full" in caplog.text


def _record(task_id: str) -> TaskRecord:
    return TaskRecord("exec-1", task_id, None, "finished", None, None, "{}")


def test_sqlite_write_nowait_refuses_when_the_database_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    with SQLiteStore(path) as store:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            assert store.write_nowait([_record("a")]) is False
            assert store.write_nowait([_record("a"), _record("b")]) is False
            other.execute("ROLLBACK")
            assert store.write_nowait([_record("a"), _record("b")]) is True
        finally:
            other.close()
        rows = store._conn().execute("SELECT task_id FROM tasks ORDER BY task_id").fetchall()
        assert rows == [("a",), ("b",)]
        with store._lock:  # a long read in another thread: the loop does not wait for it
            assert store.write_nowait([_record("c")]) is False


def test_sqlite_write_nowait_raises_real_errors_and_keeps_nothing(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "bad.db") as store:
        bad = TaskRecord("exec-1", "x", None, None, None, None, "{}")  # type: ignore[arg-type]
        with pytest.raises(sqlite3.IntegrityError):
            store.write_nowait([_record("a"), bad])
        with pytest.raises(sqlite3.IntegrityError):
            store.write_nowait([bad])
        count = store._conn().execute("SELECT count(*) FROM tasks").fetchone()
        assert count == (0,)


def test_sqlite_full_never_writes_on_the_loop(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "full.db", synchronous="FULL") as store:
        assert store.write_nowait([_record("a")]) is False
    with SQLiteStore(tmp_path / "normal.db", write_on_loop=False) as store:
        assert store.write_nowait([_record("a")]) is False
        store.write([_record("a")])
        assert store._conn().execute("SELECT task_id FROM tasks").fetchall() == [("a",)]
    with MemoryStore() as memory:
        assert memory.write_nowait([_record("a")]) is True


def test_sqlite_checkpoints_the_wal_beside_the_loops_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_EVERY", 50)
    path = tmp_path / "wal.db"
    with SQLiteStore(path) as store:
        before = path.stat().st_size
        copying = threading.Event()
        go_on = threading.Event()
        connect = store._connect

        class Held:
            """The checkpoint's connection, held in its first PASSIVE checkpoint until `go_on`."""

            def __init__(self, db: sqlite3.Connection) -> None:
                self.db = db
                self.thread = threading.current_thread().name

            def execute(self, sql: str) -> sqlite3.Cursor:
                copying.set()
                go_on.wait(10)
                return self.db.execute(sql)

            def close(self) -> None:
                self.db.close()

        monkeypatch.setattr(store, "_connect", lambda synchronous, timeout: Held(connect(synchronous, timeout)))
        for i in range(50):
            assert store.write_nowait([_record(f"t{i}")])
        # The 50th record started a checkpoint in a thread of the store; the loop never declines for it.
        assert copying.wait(10)
        assert isinstance(store._bulk, Held)
        assert store._bulk.thread == "tukio-sqlite-checkpoint"
        for i in range(50, 80):
            assert store.write_nowait([_record(f"t{i}")])
        go_on.set()
        store._wait_for_checkpoint()
        # Its last step (under the lock) copied everything: the counter starts again, rows are in the file.
        assert store._written == 0
        assert path.stat().st_size > before
        assert store.checkpoint() is True
        assert len(store._conn().execute("SELECT task_id FROM tasks").fetchall()) == 80


def test_json_serializer_matches_the_json_module_and_recovers_from_failures() -> None:
    serializer = JSONSerializer()
    reference = json.JSONEncoder(separators=(",", ":"), default=lambda v: v.isoformat())
    values: list[Any] = [
        {"a": [1, 2.5, None, True, "é\u2028"], "b": {"c": (1, 2)}},
        [],
        "text",
        3,
        float("inf"),
        {1: datetime(2020, 1, 2, tzinfo=timezone.utc)},
    ]
    for value in values:
        assert serializer.dumps(value) == reference.encode(value)
    loop: list[Any] = []
    loop.append(loop)
    outer = {"x": loop}
    with pytest.raises(ValueError, match="Circular reference"):
        serializer.dumps(outer)
    # A failed call leaves no trace: the same containers, fixed, encode again.
    loop.clear()
    assert serializer.dumps(outer) == '{"x":[]}'
    bad = [[object()]]
    with pytest.raises(TypeError, match="not JSON serializable"):
        serializer.dumps(bad)
    bad[0].clear()
    assert serializer.dumps(bad) == "[[]]"


class CountingStore(MemoryStore):
    """A memory store that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, records: Sequence[Record]) -> None:
        self.writes += 1
        super().write(records)


async def _commits_at_once_only_when_alone() -> None:
    store = CountingStore()
    loop = asyncio.get_running_loop()
    journal = journal_module.Journal(store, loop)
    # One writer a turn: each commit runs at once (on the loop), nothing deferred.
    for _ in range(5):
        assert journal.flush().done()
        await asyncio.sleep(0)  # the next turn

    def crowded() -> None:  # two writers in one turn: the second one's commit is deferred, then shared
        first = journal.flush()
        second, third = journal.flush(), journal.flush()
        seen.set_result((first.done(), second.done(), second is third))

    seen: asyncio.Future[tuple[bool, bool, bool]] = loop.create_future()
    loop.call_soon(crowded)
    assert await seen == (True, False, True)
    # Commits are grouped again (deferred to the end of their turn) until LONE_TURNS of them in a
    # row had their turn alone: then they run at once again.
    for _ in range(journal_module.LONE_TURNS):
        deferred = journal.flush()
        assert not deferred.done()
        await deferred
        await asyncio.sleep(0)
    assert journal.flush().done()


async def test_the_journal_commits_at_once_only_when_nobody_else_waits() -> None:
    await _commits_at_once_only_when_alone()


def test_the_journal_commits_at_once_on_uvloop_too() -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(_commits_at_once_only_when_alone())
    finally:
        loop.close()


async def test_records_of_one_turn_share_a_commit(step: str) -> None:
    store = CountingStore()
    engine = Engine(store=store)
    started = [await engine.run_once(chain(step, uid=f"c{i}"), {"v": i}) for i in range(20)]
    await asyncio.wait_for(asyncio.gather(*(wf for wf in started if wf is not None)), 5)
    await engine.stop()
    # 20 chains of 3 tasks: 60 task ends and 20 triggers, far fewer commits.
    assert store.writes < 40
    for wf in started:
        assert wf is not None
        assert states(store.load(wf.uid)) == {"a": "finished", "b": "finished", "c": "finished"}
