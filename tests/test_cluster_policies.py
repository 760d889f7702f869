"""Overrun policies across the nodes of a shared store, and the pruning of dead nodes.

Each test runs on PostgreSQL and on one SQLite file: two or three engines
(nodes) in this process share the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import template, until

import tukio.cluster
from tukio import Engine, Event, Workflow, WorkflowTemplate
from tukio.policy import Decision, OverrunPolicy
from tukio.store import MemoryStore, SQLiteStore
from tukio.store._gate import Running, rule
from tukio.store.base import ExecutionRecord, Store
from tukio.store.postgres import PostgresStore

#: What ran, in order: (node, task id) as a task starts, ("end", exec id) as a workflow ends.
ORDER: list[tuple[str, str]] = []
GATES: dict[str, asyncio.Event] = {}
PARKED: dict[str, asyncio.Event] = {}


@pytest.fixture(params=["postgres", "sqlite"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """``shared()``: a new store object on the one shared journal of the test."""
    made: list[Store] = []
    if request.param == "postgres":
        dsn, schema = request.getfixturevalue("pg_schema")

        def new() -> Any:
            made.append(PostgresStore(dsn, schema=schema))
            return made[-1]
    else:

        def new() -> Any:
            made.append(SQLiteStore(tmp_path / "shared.db"))
            return made[-1]

    new.postgres = request.param == "postgres"  # type: ignore[attr-defined]
    yield new
    for store in made:
        store.close()


@pytest.fixture
def parked(registered: Callable[..., Any], task_name: Callable[[str], str]) -> Callable[[str, str], WorkflowTemplate]:
    """``parked(node, policy)``: template "pol", a -> b; a unlocks when its data says so, b parks on GATES[node]."""
    ORDER.clear()
    GATES.clear()
    PARKED.clear()

    def make(node: str, policy: str) -> WorkflowTemplate:
        async def step(event: Event) -> dict[str, Any]:
            tid = asyncio.current_task().template.uid  # type: ignore[union-attr]
            ORDER.append((node, tid))
            if tid == "a" and event.data.get("unlock"):
                Workflow.current_workflow().unlock_when_task_done()  # type: ignore[union-attr]
            if tid == "b":
                PARKED.setdefault(node, asyncio.Event()).set()
                await GATES.setdefault(node, asyncio.Event()).wait()
            return dict(event.data)

        name = task_name(f"policy-{node}")
        registered(name, step)
        return template([("a", name), ("b", name)], {"a": ["b"]}, id="pol", policy=policy)

    return make


async def parked_on(node: str) -> None:
    event = PARKED.setdefault(node, asyncio.Event())
    await asyncio.wait_for(event.wait(), 10)
    event.clear()


def deaf(engine: Engine) -> None:
    """Keep `engine` from hearing cancel requests before its next heartbeat (PostgreSQL signals them)."""
    assert engine._cluster is not None
    if engine._cluster._cancelling is not None:
        engine._cluster._cancelling.cancel()


def ended(workflow: Workflow) -> None:
    workflow.add_done_callback(lambda w: ORDER.append(("end", w.uid)))


async def engines(
    shared: Callable[[], Any],
    parked: Callable[[str, str], WorkflowTemplate],
    policy: str,
    *nodes: str,
    lease: float = 30,
) -> list[Engine]:
    made = []
    for node in nodes:
        engine = Engine(store=shared(), node=node, lease=lease)
        await engine.load(parked(node, policy))
        made.append(engine)
    return made


async def stop(*engines: Engine) -> None:
    for gate in GATES.values():
        gate.set()
    await asyncio.wait_for(asyncio.gather(*(e.stop(force=True) for e in engines)), 10)


def state(store: Any, exec_id: str) -> str:
    return str(store.load(exec_id)["exec"]["state"])


# -- the rule both stores apply ---------------------------------------------------------------
def test_rule_counts_other_nodes_and_this_nodes_running_instances_only() -> None:
    rows = [
        Running("mine-running", True, True, True),
        Running("mine-ended", True, True, True),  # ended here, its end not committed yet: not counted
        Running("live", False, False, True),
        Running("dead", True, False, False),
    ]
    here = {"mine-running"}
    assert rule(OverrunPolicy.SKIP, "new", rows, here).decision is Decision.skip
    assert rule(OverrunPolicy.SKIP, "new", rows[1:2], here).decision is Decision.start
    assert rule(OverrunPolicy.SKIP_UNTIL_UNLOCK, "new", rows[1:3], here).decision is Decision.start
    assert rule(OverrunPolicy.SKIP_UNTIL_UNLOCK, "new", rows, here).decision is Decision.skip
    assert rule(OverrunPolicy.START_NEW, "new", rows, here).decision is Decision.start
    abort = rule(OverrunPolicy.ABORT_RUNNING, "new", rows, here)
    assert abort.decision is Decision.abort_then_start
    assert (abort.cancel_now, abort.request, abort.wait) == (["dead"], ["live"], ["live", "mine-running"])
    # A retried admission whose first answer was lost finds its own row: it started.
    assert rule(OverrunPolicy.SKIP, "live", rows, here).decision is Decision.start


# -- skip ----------------------------------------------------------------------------------------
async def test_skip_two_nodes_triggered_at_once_start_one_instance(
    shared: Callable[[], Any], parked: Callable[[str, str], WorkflowTemplate]
) -> None:
    a, b = await engines(shared, parked, "skip", "a", "b")
    for round_ in range(3):
        pair = await asyncio.gather(a.trigger("pol", {"r": round_}), b.trigger("pol", {"r": round_}))
        [running] = [w for w in pair if w is not None]
        node = "a" if pair[0] is not None else "b"
        await parked_on(node)
        # While it runs, no node starts another one.
        assert await a.trigger("pol", {}) is None
        assert await b.data_received({}) == []
        GATES[node].set()
        await asyncio.wait_for(running, 10)
        await (a if node == "a" else b).flush()  # its end is committed (it is, right after it ends)
        GATES[node].clear()
    assert len([t for t in ORDER if t[1] == "a"]) == 3
    # Once its end is committed, the other node starts the next one.
    other = b if node == "a" else a
    started = await other.trigger("pol", {})
    assert started is not None
    await stop(a, b)


# -- abort-running ------------------------------------------------------------------------------------
async def test_abort_running_cancels_the_instance_of_another_node_then_starts(
    shared: Callable[[], Any], parked: Callable[[str, str], WorkflowTemplate]
) -> None:
    # PostgreSQL signals the request (NOTIFY): a acts at once. SQLite: at a's next heartbeat (every 0.2 s).
    lease = 30 if shared.postgres else 0.6  # type: ignore[attr-defined]
    a, b = await engines(shared, parked, "abort-running", "a", "b", lease=lease)
    first = await a.trigger("pol", {})
    assert first is not None
    ended(first)
    await parked_on("a")
    second = await b.trigger("pol", {})
    assert second is not None
    ended(second)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(first, 5)  # cancelled on a
    await parked_on("b")
    # b's instance started only once a's had ended.
    assert [("a", "a"), ("a", "b"), ("end", first.uid), ("b", "a"), ("b", "b")] == ORDER
    await a.flush()
    assert state(a.store, first.uid) == "cancelled"
    # Still running, b's instance is aborted in turn by a trigger on a.
    third = await a.trigger("pol", {})
    assert third is not None
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(second, 10)
    await parked_on("a")
    await stop(a, b)


async def test_abort_running_on_the_same_node_waits_for_the_local_instance(
    shared: Callable[[], Any], parked: Callable[[str, str], WorkflowTemplate]
) -> None:
    [a] = await engines(shared, parked, "abort-running", "a")
    first = await a.trigger("pol", {})
    assert first is not None
    await parked_on("a")
    second = await a.trigger("pol", {})
    assert second is not None
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(first, 10)
    await parked_on("a")
    assert not second.done()
    await stop(a)


async def test_abort_running_of_a_dead_nodes_instance_cancels_it_in_the_store_and_fences_its_zombie(
    shared: Callable[[], Any], parked: Callable[[str, str], WorkflowTemplate], caplog: pytest.LogCaptureFixture
) -> None:
    a, b, c = await engines(shared, parked, "abort-running", "a", "b", "c")
    first = await a.trigger("pol", {})
    assert first is not None
    await parked_on("a")
    await a.flush()
    a.store.leave()  # type: ignore[union-attr]  # a looks dead (paused past its lease) while it runs
    second = await b.trigger("pol", {})
    assert second is not None
    await parked_on("b")  # nothing to wait for: the dead node's instance was cancelled by the admission
    assert state(b.store, first.uid) == "cancelled"
    assert await c.recover() == []  # never taken over
    GATES["a"].set()  # the zombie's next write is refused: its copy is cancelled
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(first, 10)
    assert "its writes were refused" in caplog.text
    assert state(b.store, first.uid) == "cancelled"
    await stop(a, b, c)


async def test_a_cancel_request_outlives_its_dead_target_node_which_is_then_not_taken_over(
    shared: Callable[[], Any], parked: Callable[[str, str], WorkflowTemplate]
) -> None:
    a, b, c = await engines(shared, parked, "abort-running", "a", "b", "c")  # a beats every 10 s
    deaf(a)
    first = await a.trigger("pol", {})
    assert first is not None
    await parked_on("a")
    await a.flush()
    second = await b.trigger("pol", {})  # a lives: a cancel request for its instance
    assert second is not None
    assert not PARKED.get("b", asyncio.Event()).is_set()
    a.store.leave()  # type: ignore[union-attr]  # a dies before it acts on the request
    assert await c.recover() == []  # the request is honoured: cancelled, not resumed
    assert state(c.store, first.uid) == "cancelled"
    await parked_on("b")  # b's instance saw it end, and started
    await stop(a, b, c)


async def test_a_node_restarted_under_its_name_does_not_resume_what_was_aborted(
    shared: Callable[[], Any], parked: Callable[[str, str], WorkflowTemplate]
) -> None:
    a, b = await engines(shared, parked, "abort-running", "a", "b")
    deaf(a)
    first = await a.trigger("pol", {})
    assert first is not None
    await parked_on("a")
    await a.flush()
    second = await b.trigger("pol", {})
    assert second is not None
    again = Engine(store=shared(), node="a", lease=30)  # a restarts (a new epoch) before it acted
    await again.load(parked("a2", "abort-running"))
    assert await again.recover() == []
    assert state(b.store, first.uid) == "cancelled"
    await parked_on("b")
    await stop(a, b, again)


# -- skip-until-unlock -----------------------------------------------------------------------------
async def test_skip_until_unlock_holds_across_nodes_until_the_unlock_task_ends(
    shared: Callable[[], Any], parked: Callable[[str, str], WorkflowTemplate]
) -> None:
    a, b = await engines(shared, parked, "skip-until-unlock", "a", "b")
    locked = await a.trigger("pol", {})  # no task unlocks it: locked until it ends
    assert locked is not None
    await parked_on("a")
    assert await b.trigger("pol", {}) is None
    locked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await locked
    await a.flush()
    unlocking = await b.trigger("pol", {"unlock": True})  # its task a unlocks it as it ends
    assert unlocking is not None
    await parked_on("b")
    assert not unlocking.lock.locked()
    # The unlock is recorded right after task a ended; until then a still skips.
    started = None
    for _ in range(1000):
        started = await a.trigger("pol", {})
        if started is not None:
            break
        await asyncio.sleep(0.01)
    assert started is not None
    assert not unlocking.done()  # both run now
    await parked_on("a")
    assert await b.trigger("pol", {}) is None  # the new one is locked
    await stop(a, b)


async def test_skip_until_unlock_counts_this_nodes_unlock_as_the_body_ends(
    shared: Callable[[], Any], parked: Callable[[str, str], WorkflowTemplate]
) -> None:
    """A node's own unlock counts at once, not once the store has it; another node sees it late, never early."""
    a, b = await engines(shared, parked, "skip-until-unlock", "a", "b")
    store = a.store
    assert store is not None
    recorded = threading.Event()
    record = store.unlock  # type: ignore[attr-defined]

    def held(exec_ids: list[str]) -> None:  # the store learns of unlocks only once the test says so
        assert recorded.wait(10)
        record(exec_ids)

    store.unlock = held  # type: ignore[attr-defined]
    try:
        for n in range(20):
            workflow = await a.trigger("pol", {"unlock": True})
            assert workflow is not None, f"trigger {n}, made once the previous one unlocked, was skipped"
            await until(lambda w=workflow: not w.locked())  # type: ignore[misc]
            assert await b.trigger("pol", {}) is None  # b sees only what the store has: still locked
    finally:
        recorded.set()
    started = None
    for _ in range(1000):  # once recorded, b sees the unlocks
        started = await b.trigger("pol", {})
        if started is not None:
            break
        await asyncio.sleep(0.01)
    assert started is not None
    await stop(a, b)


async def test_skip_until_unlock_with_a_memory_store_counts_the_unlock_as_the_body_ends(
    parked: Callable[[str, str], WorkflowTemplate],
) -> None:
    engine = Engine(store=MemoryStore())
    await engine.load(parked("m", "skip-until-unlock"))
    for n in range(20):
        workflow = await engine.trigger("pol", {"unlock": True})
        assert workflow is not None, f"trigger {n}, made once the previous one unlocked, was skipped"
        await until(lambda w=workflow: not w.locked())  # type: ignore[misc]
    locked = await engine.trigger("pol", {})
    assert locked is not None
    assert await engine.trigger("pol", {}) is None
    await stop(engine)


# -- what stays as it was ------------------------------------------------------------------------------
async def test_start_new_and_a_stopping_engine(
    shared: Callable[[], Any], parked: Callable[[str, str], WorkflowTemplate]
) -> None:
    a, b = await engines(shared, parked, "start-new", "a", "b")
    assert await a.trigger("pol", {}) is not None
    assert await b.trigger("pol", {}) is not None  # start-new: the store is not asked
    await stop(a, b)


async def test_an_engine_stopped_while_the_store_decides_starts_nothing(
    shared: Callable[[], Any], parked: Callable[[str, str], WorkflowTemplate]
) -> None:
    [a] = await engines(shared, parked, "skip", "a")
    assert a._cluster is not None
    admit = a._cluster.admit

    async def stop_meanwhile(workflow: Workflow, data: Any, running: Any = ()) -> Any:
        got = await admit(workflow, data, running)
        a.stop()
        return got

    a._cluster.admit = stop_meanwhile  # type: ignore[method-assign]
    assert await a.trigger("pol", {}) is None
    await asyncio.wait_for(a, 10)
    [info] = a.store.executions()  # type: ignore[union-attr]
    assert info.state == "cancelled"


async def test_a_replaced_node_is_told_to_skip(
    shared: Callable[[], Any], parked: Callable[[str, str], WorkflowTemplate], caplog: pytest.LogCaptureFixture
) -> None:
    [old] = await engines(shared, parked, "skip", "a")
    await old.flush()
    assert await old.trigger("pol", {"n": 1}) is not None
    await parked_on("a")
    new = shared()
    new.attach("a", lease=30)
    new.join()  # the same name elsewhere: a newer epoch
    assert await old.trigger("pol", {}) is None
    assert "was replaced" in caplog.text
    await stop(old)


async def test_failures_to_record_an_unlock_or_to_watch_are_logged(
    shared: Callable[[], Any], parked: Callable[[str, str], WorkflowTemplate], caplog: pytest.LogCaptureFixture
) -> None:
    [a] = await engines(shared, parked, "skip", "a")
    cluster = a._cluster
    assert cluster is not None

    def broken(*args: Any) -> Any:
        raise OSError("disk gone")

    cluster.store.unlock = broken  # type: ignore[method-assign]
    cluster.store.unfinished_among = broken  # type: ignore[method-assign]
    unlocking = await a.trigger("pol", {"unlock": True})
    assert unlocking is not None
    await parked_on("a")
    elsewhere = cluster.policies.watch("somewhere-else")
    assert not elsewhere.cancel()  # a stand-in: its cancel request is in the store
    for _ in range(1000):
        if "could not record that 1 execution(s) unlocked" in caplog.text and "could not check" in caplog.text:
            break
        await asyncio.sleep(0.01)
    assert "could not record that 1 execution(s) unlocked" in caplog.text
    assert "could not check aborted executions" in caplog.text
    await stop(a)
    assert not elsewhere.done()


# -- pruning dead nodes ----------------------------------------------------------------------------
def _node(new: Callable[[], Any], name: str, *, ephemeral: bool) -> Any:
    store = new()
    store.ephemeral = ephemeral
    store.attach(name, lease=30)
    store.join()
    return store


def _nodes(store: Any) -> set[str]:
    if isinstance(store, SQLiteStore):
        with store._lock:
            return {r[0] for r in store._conn().execute("SELECT name FROM nodes").fetchall()}

    async def names(conn: Any) -> set[str]:
        return {r[0] for r in await conn.fetch(f"SELECT name FROM {store.sql.schema}.nodes")}

    return store._run(store._reader.call(names))  # type: ignore[no-any-return]


def test_dead_default_named_nodes_are_pruned_once_taken_over(shared: Callable[[], Any]) -> None:
    gone = _node(shared, "host-1-1", ephemeral=True)
    gone.write([ExecutionRecord("x", "t", "pending", None)])
    gone.leave()
    named = _node(shared, "named", ephemeral=False)
    named.leave()
    live = _node(shared, "host-1-2", ephemeral=True)
    me = _node(shared, "me", ephemeral=True)
    # gone owns an unfinished execution; named may come back; live lives; me is me.
    assert me.prune_nodes(0) == []
    assert [i.exec_id for i in me.claim(["t"])] == ["x"]
    assert me.prune_nodes(3600) == []  # within the grace period
    assert me.prune_nodes(0) == ["host-1-1"]
    assert _nodes(me) == {"named", "host-1-2", "me"}
    assert me.prune_nodes(0) == []
    assert gone.heartbeat() == "replaced"  # a zombie of a pruned node writes nothing
    if isinstance(me, SQLiteStore):
        assert not os.path.exists(me._lock_path("host-1-1"))
        assert os.path.exists(me._lock_path("host-1-2"))
    live.leave()


def test_a_paused_dead_nodes_lock_file_is_kept(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "j.db") as paused, SQLiteStore(tmp_path / "j.db") as me:
        paused.ephemeral = True
        paused.attach("host-2-1", lease=30)
        paused.join()
        with paused._lock:  # its lease expired, its process (holding the lock) paused
            paused._conn().execute("UPDATE nodes SET expires = 0 WHERE name = 'host-2-1'")
        me.attach("me")
        me.join()
        assert me.prune_nodes(0) == []
        assert os.path.exists(me._lock_path("host-2-1"))


async def test_heartbeats_prune_dead_nodes(
    shared: Callable[[], Any], parked: Callable[[str, str], WorkflowTemplate], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tukio.cluster, "PRUNE_EVERY", 1)
    gone = _node(shared, "host-3-1", ephemeral=True)
    gone.leave()
    engine = Engine(store=shared(), lease=0.3)  # a default name: ephemeral
    assert engine._cluster is not None
    assert engine.store.ephemeral  # type: ignore[union-attr]
    engine._cluster.prune_grace = 0
    for _ in range(500):
        if "host-3-1" not in _nodes(engine.store):
            break
        await asyncio.sleep(0.01)
    assert _nodes(engine.store) == {engine.node}
    await asyncio.wait_for(engine.stop(), 10)


# -- several processes ------------------------------------------------------------------------------
class Worker:
    """One engine process (tests/policy_worker.py), read line by line, bounded in time, stopped by PID."""

    def __init__(self, spec: str, node: str, policy: str, lease: float, log: Path) -> None:
        self.log = log
        with log.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("policy_worker.py")), spec, node, policy, str(lease)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=Path(__file__).parent,
            )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def line(self) -> str:
        try:
            return self.lines.get(timeout=30)
        except queue.Empty:
            raise AssertionError(f"worker {self.proc.pid} said nothing: {self.log.read_text()}") from None

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self) -> None:
        assert self.proc.wait(timeout=30) == 0, self.log.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


@pytest.fixture(params=["postgres", "sqlite"])
def spawn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str, str, float], Worker]]:
    if request.param == "postgres":
        dsn, schema = request.getfixturevalue("pg_schema")
        spec = f"{dsn}#{schema}"
    else:
        spec = str(tmp_path / "mp.db")
    made: list[Worker] = []

    def start(node: str, policy: str, lease: float = 30.0) -> Worker:
        made.append(Worker(spec, node, policy, lease, tmp_path / f"{node}.log"))
        return made[-1]

    yield start
    for worker in made:
        worker.kill()


@pytest.mark.slow
def test_processes_triggered_at_once_under_skip_start_one_instance(spawn: Callable[..., Worker]) -> None:
    a, b = spawn("a", "skip"), spawn("b", "skip")
    assert (a.line(), b.line()) == ("READY", "READY")
    a.send("go")
    b.send("go")
    said = sorted([a.line(), b.line()])
    assert said == ["SKIPPED", "STARTED"], f"a: {a.log.read_text()}\nb: {b.log.read_text()}"
    for worker in (a, b):
        worker.send("end")
    a.wait()
    b.wait()


@pytest.mark.slow
def test_abort_running_in_another_process(spawn: Callable[..., Worker]) -> None:
    a, b = spawn("a", "abort-running", 0.6), spawn("b", "abort-running", 0.6)
    assert (a.line(), b.line()) == ("READY", "READY")
    a.send("go")
    assert (a.line(), a.line()) == ("STARTED", "RUNNING")
    b.send("go")
    assert b.line() == "STARTED"
    assert a.line() == "CANCELLED"  # at a's next heartbeat
    assert b.line() == "RUNNING"  # only then
    for worker in (a, b):
        worker.send("end")
    a.wait()
    b.wait()


def test_the_store_admits_once_and_a_retried_admission_finds_its_record(shared: Callable[[], Any]) -> None:
    store = _node(shared, "n", ephemeral=False)

    def begin(exec_id: str) -> ExecutionRecord:
        return ExecutionRecord(exec_id, "t", "pending", "2026-01-01T00:00:00.000000+00:00", template="{}", event="{}")

    assert store.admit(OverrunPolicy.SKIP, begin("one"), ["one"]) == (Decision.start, [])
    # The answer was lost and the admission is tried again: it was admitted.
    assert store.admit(OverrunPolicy.SKIP, begin("one"), ["one"]) == (Decision.start, [])
    assert store.admit(OverrunPolicy.SKIP, begin("two"), ["one", "two"]) == (Decision.skip, [])
    # This node's own execution that does not run here any more (its end not committed yet) is not counted.
    assert store.admit(OverrunPolicy.SKIP, begin("three"), ["three"]) == (Decision.start, [])
    assert store.admit(OverrunPolicy.ABORT_RUNNING, begin("four"), ["three", "four"]) == (
        Decision.abort_then_start,
        ["three"],
    )
    assert sorted(i.exec_id for i in store.executions(state="pending")) == ["four", "one", "three"]
    assert sorted(store.unfinished_among(["one", "two", "four"])) == ["four", "one"]


def test_a_dead_node_whose_lock_file_is_gone_is_pruned(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "j.db") as gone, SQLiteStore(tmp_path / "j.db") as me:
        gone.ephemeral = True
        gone.attach("host-4-1", lease=30)
        gone.join()
        gone.leave()
        os.unlink(gone._lock_path("host-4-1"))
        me.attach("me")
        me.join()
        assert me.prune_nodes(0) == ["host-4-1"]


async def test_failures_to_hear_or_read_cancel_requests_are_logged(
    pg_schema: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(pg_schema[0], schema=pg_schema[1])  # only PostgreSQL signals cancel requests

    def broken(*args: Any) -> Any:
        raise OSError("no listener")

    store.listen_cancels = broken  # type: ignore[method-assign]
    engine = Engine(store=store, node="deaf", lease=0.3)
    assert engine._cluster is not None
    for _ in range(500):
        if "cannot listen for cancel requests" in caplog.text:
            break
        await asyncio.sleep(0.01)
    assert "cannot listen for cancel requests" in caplog.text
    store.cancel_requests = broken  # type: ignore[method-assign]
    engine._cluster._signalled()  # as the store's thread does on a NOTIFY
    for _ in range(500):
        if "acting on cancel requests failed" in caplog.text:
            break
        await asyncio.sleep(0.01)
    assert "acting on cancel requests failed" in caplog.text
    await asyncio.wait_for(engine.stop(), 10)
    store.close()


async def test_a_trigger_the_store_cannot_decide_on_is_logged_and_not_started(
    shared: Callable[[], Any], parked: Callable[[str, str], WorkflowTemplate], caplog: pytest.LogCaptureFixture
) -> None:
    [a] = await engines(shared, parked, "skip", "a")
    assert a._cluster is not None

    def broken(*args: Any) -> Any:
        raise OSError("database gone")

    a._cluster.store.admit = broken  # type: ignore[method-assign]
    a._cluster.store.admit_soon = lambda *args: None  # type: ignore[attr-defined]
    assert await a.trigger("pol", {}) is None
    assert await a.data_received({}) == []
    assert "not started, the store could not apply its policy: database gone" in caplog.text
    assert a.instances == []
    await stop(a)
