"""The ownership protocol under faults, on SQLite and PostgreSQL (issue 19, items 1-5).

Each test reproduces one fault of the issue in one process: a claimed
execution counted by nobody, a node taken for dead when its connection
drops, a heartbeat stuck behind a takeover, a node back from a pause
starting what it lost, leases on a wall clock that jumps.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import template

from tukio import Engine, Event, Workflow, WorkflowTemplate
from tukio.store import SQLiteStore
from tukio.store._lease import lease_clock
from tukio.store.base import Store

RUNS: Counter[tuple[str, str]] = Counter()
GATE: dict[str, asyncio.Event] = {}
STARTED: dict[str, asyncio.Event] = {}


class FakeClock:
    """A lease clock that moves only when told to (shared by the stores of one test)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Held:
    """What a store's loads wait on: a test holds a takeover between its claim and its resume."""

    def __init__(self) -> None:
        self.loading = threading.Event()
        self.release = threading.Event()
        self.beats = 0
        self._lock = threading.Lock()
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Event]] = []

    def beat(self) -> None:
        """(From the heartbeat's thread.) Count a heartbeat; wake up who waits for that many."""
        with self._lock:
            self.beats += 1
            for count, loop, event in self._waiters:
                if self.beats >= count:
                    loop.call_soon_threadsafe(event.set)

    async def beats_reach(self, count: int) -> None:
        """Return once `count` heartbeats were made."""
        event = asyncio.Event()
        with self._lock:
            self._waiters.append((count, asyncio.get_running_loop(), event))
            if self.beats >= count:
                event.set()
        await event.wait()

    def wait(self) -> None:
        self.loading.set()
        if not self.release.wait(10):
            raise TimeoutError("the test never released the load")


def holding(base: type[Store]) -> type[Any]:
    """A subclass of store class `base` whose loads wait on `held` and whose heartbeats are counted."""

    class HeldStore(base):  # type: ignore[valid-type, misc]
        held: Held

        def load(self, exec_id: str) -> dict[str, Any]:
            self.held.wait()
            return super().load(exec_id)  # type: ignore[no-any-return]

        def heartbeat(self) -> Any:
            beat = super().heartbeat()
            self.held.beat()  # counted once made
            return beat

    return HeldStore


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``shared(held=None, clock=None)``: a new store on one journal (SQLite file or PostgreSQL schema)."""
    made: list[Any] = []
    if request.param == "sqlite":

        def new(held: Held | None = None, clock: Any = None) -> Any:
            cls = SQLiteStore if held is None else holding(SQLiteStore)
            store = cls(tmp_path / "shared.db", **({} if clock is None else {"clock": clock}))
            if held is not None:
                store.held = held
            made.append(store)
            return store

        yield new
    else:
        from tukio.store.postgres import PostgresStore

        dsn, schema = request.getfixturevalue("pg_schema")

        def new(held: Held | None = None, clock: Any = None) -> Any:
            cls = PostgresStore if held is None else holding(PostgresStore)
            store = cls(dsn, schema=schema)
            if held is not None:
                store.held = held
            made.append(store)
            return store

        yield new
    for store in made:
        store.close()


@pytest.fixture
def chain(registered: Callable[..., Any], task_name: Callable[[str], str]) -> Callable[..., WorkflowTemplate]:
    """``chain(node, engine, policy)``: the chain a-b whose tasks count their runs as (node, task id).

    Every engine loads the same chain for a policy (one template version: a
    takeover runs an execution on the version it began with); `engine` is
    labelled `node`, and a task counts its run under the label of the engine
    that runs it. Task a waits on GATE[node] when set.
    """
    RUNS.clear()
    GATE.clear()
    STARTED.clear()
    labels: dict[Engine, str] = {}
    made: dict[str, WorkflowTemplate] = {}

    async def own_step(event: Event) -> dict[str, Any]:
        tid = asyncio.current_task().template.uid  # type: ignore[union-attr]
        workflow = Workflow.current_workflow()
        [node] = [label for engine, label in labels.items() if workflow in engine.instances]
        RUNS[node, tid] += 1
        if tid == "a":
            STARTED.setdefault(node, asyncio.Event()).set()
            if node in GATE:
                await GATE[node].wait()
        return {tid: node}

    def make(node: str, engine: Engine, policy: str = "start-new") -> WorkflowTemplate:
        labels[engine] = node
        if policy not in made:
            name = task_name("own")
            registered(name, own_step)
            made[policy] = template([("a", name), ("b", name)], {"a": ["b"]}, id="own-chain", policy=policy)
        return made[policy]

    return make


async def dead_nodes_execution(shared: Callable[..., Any], chain: Callable[..., WorkflowTemplate], **kw: Any) -> Any:
    """An execution of node "gone" stuck in task a, then "gone" left (dead): returns its workflow (a zombie)."""
    store = shared()
    gone = Engine(store=store, node="gone", lease=30)
    await gone.load(chain("gone", gone, **kw))
    GATE["gone"] = asyncio.Event()
    wf = await gone.trigger("own-chain", {})
    assert wf is not None
    await asyncio.wait_for(STARTED.setdefault("gone", asyncio.Event()).wait(), 10)
    await gone.flush()
    await asyncio.to_thread(store.leave)
    return gone, wf


async def stop(*engines: Engine) -> None:
    for gate in GATE.values():
        gate.set()
    await asyncio.wait_for(asyncio.gather(*(e.stop(force=True) for e in engines)), 10)


# -- item 1: a claimed execution counts as running on its new owner from the claim on --------------------
@pytest.mark.parametrize(
    ("policy", "unlocked", "started"),
    [("skip", False, False), ("skip-until-unlock", False, False), ("skip-until-unlock", True, True)],
)
async def test_a_claimed_execution_not_resumed_yet_counts_for_the_policy(
    shared: Callable[..., Any], chain: Callable[..., WorkflowTemplate], policy: str, unlocked: bool, started: bool
) -> None:
    gone, zombie = await dead_nodes_execution(shared, chain, policy=policy)
    if unlocked:  # its root task had ended (unlocking it) before its node died
        gone_store = shared()
        gone_store.attach("gone", lease=30)
        await asyncio.to_thread(_unlock_as, gone_store, zombie.uid)
    held = Held()
    live = Engine(store=shared(held), node="live", lease=30)
    await live.load(chain("live", live, policy=policy))
    recovering = asyncio.ensure_future(live.recover())
    assert await asyncio.to_thread(held.loading.wait, 10)  # claimed, being loaded: not running yet
    second = await live.trigger("own-chain", {})
    assert (second is not None) is started
    held.release.set()
    [resumed] = await asyncio.wait_for(recovering, 10)
    assert resumed.uid == zombie.uid
    await asyncio.wait_for(resumed, 10)
    await stop(gone, live)


def _unlock_as(store: Any, exec_id: str) -> None:
    """Record, as node "gone" did before it died, that `exec_id` unlocked (a new epoch of "gone" owns it)."""
    store.join()
    store.unlock([exec_id])
    store.leave()


async def test_abort_running_aborts_a_claimed_execution_before_it_resumes(
    shared: Callable[..., Any], chain: Callable[..., WorkflowTemplate]
) -> None:
    gone, zombie = await dead_nodes_execution(shared, chain, policy="abort-running")
    held = Held()
    live_store = shared(held)
    live = Engine(store=live_store, node="live", lease=30)
    await live.load(chain("live", live, policy="abort-running"))
    recovering = asyncio.ensure_future(live.recover())
    assert await asyncio.to_thread(held.loading.wait, 10)
    new = await live.trigger("own-chain", {"new": True})
    assert new is not None
    held.release.set()
    assert await asyncio.wait_for(recovering, 10) == []  # aborted: not resumed
    await asyncio.wait_for(new, 10)  # it ran once the claimed one had ended
    await live.flush()
    report = await asyncio.to_thread(live_store.load, zombie.uid)
    assert report["exec"]["state"] == "cancelled"
    assert RUNS["live", "a"] == 1  # the new one only
    await stop(gone, live)


# -- item 2: a node lives while its lease does, whatever happens to its connections ------------------------
async def test_a_node_whose_sessions_are_killed_between_heartbeats_stays_alive(
    pg_schema: tuple[str, str],
) -> None:
    import asyncpg

    from tukio.store.postgres import PostgresStore

    dsn, schema = pg_schema
    app = f"tukio-own-{schema}"
    a = PostgresStore(dsn, schema=schema, server_settings={"application_name": app})
    b = PostgresStore(dsn, schema=schema)
    try:
        a.attach("a", lease=30)
        await asyncio.to_thread(a.join)
        await asyncio.to_thread(a.write, [_begin("x-1")])
        b.attach("b", lease=30)
        await asyncio.to_thread(b.join)
        conn = await asyncpg.connect(dsn)
        try:
            # The last heartbeat was a while ago (as between two), then every session of a is cut off.
            await conn.execute(f"UPDATE \"{schema}\".nodes SET beat = now() - interval '10 seconds' WHERE name = 'a'")
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", app
            )
            assert killed >= 1
        finally:
            await conn.close()
        assert await asyncio.to_thread(b.claim, ["tpl"]) == []  # a's lease runs: a is alive
        assert await asyncio.to_thread(a.heartbeat) == "alive"  # a reconnects and goes on
        await asyncio.to_thread(a.leave)
        assert [i.exec_id for i in await asyncio.to_thread(b.claim, ["tpl"])] == ["x-1"]
    finally:
        a.close()
        b.close()


def _begin(exec_id: str) -> Any:
    from tukio.store.base import ExecutionRecord

    return ExecutionRecord(exec_id, "tpl", "pending", "2026-01-02T03:04:05+00:00", template="{}", event="{}")


# -- item 4: heartbeats never wait for takeovers -----------------------------------------------------
async def test_heartbeats_go_on_while_claimed_executions_load(
    shared: Callable[..., Any], chain: Callable[..., WorkflowTemplate]
) -> None:
    gone, zombie = await dead_nodes_execution(shared, chain)
    held = Held()
    live = Engine(store=shared(held), node="live", lease=0.3)  # heartbeats every 0.1 s, claims by themselves
    await live.load(chain("live", live))
    assert await asyncio.to_thread(held.loading.wait, 10)  # a heartbeat-era claim is loading its work
    await asyncio.wait_for(held.beats_reach(held.beats + 3), 5)  # fails when the heartbeat waits for the load
    held.release.set()
    await stop(gone, live)
    assert zombie.uid


# -- item 3: a node back from a pause starts nothing it lost -------------------------------------------
async def test_a_node_late_by_its_own_clock_does_not_start_what_was_taken_over(
    tmp_path: Path, chain: Callable[..., WorkflowTemplate]
) -> None:
    clock = FakeClock()
    path = tmp_path / "paused.db"
    made: list[Any] = []

    def new(held: Held | None = None, clock_: Any = None) -> Any:
        cls = SQLiteStore if held is None else holding(SQLiteStore)
        store = cls(path, clock=clock)
        if held is not None:
            store.held = held
        made.append(store)
        return store

    gone, _ = await dead_nodes_execution(new, chain)
    held = Held()
    paused = Engine(store=new(held), node="paused", lease=30)
    await paused.load(chain("paused", paused))
    recovering = asyncio.ensure_future(paused.recover())
    assert await asyncio.to_thread(held.loading.wait, 10)  # claimed; then the process stops past its lease
    await asyncio.wait_for(held.beats_reach(1), 10)  # (its first heartbeat made before the pause, not after)
    clock.now += 60
    other = Engine(store=new(), node="other", lease=30)
    await other.load(chain("other", other))
    [taken] = await other.recover()  # the paused node's lease ran out: its claim is taken over
    await asyncio.wait_for(taken, 10)
    held.release.set()  # the paused node goes on with its resume
    assert await asyncio.wait_for(recovering, 10) == []
    assert paused.instances == []
    assert Counter({("gone", "a"): 1, ("other", "a"): 1, ("other", "b"): 1}) == RUNS  # nothing ran on "paused"
    await stop(gone, paused, other)
    for store in made:
        store.close()


# -- item 5: SQLite leases on a clock the wall clock does not move ---------------------------------------
def test_sqlite_leases_ignore_a_step_of_the_wall_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = SQLiteStore(tmp_path / "wall.db")
    b = SQLiteStore(tmp_path / "wall.db")
    try:
        a.attach("a", lease=5)
        a.join()
        a.write([_begin("w-1")])
        b.attach("b", lease=5)
        b.join()
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 10)  # NTP steps the clock 10 s ahead
        assert b.claim(["tpl"]) == []  # a renewed its lease a moment ago: alive
        assert a.heartbeat() == "alive"
        monkeypatch.setattr(time, "time", lambda: real() - 10)  # and back, 10 s behind
        assert a.heartbeat() == "alive"
        assert b.heartbeat() == "alive"
        assert b.claim(["tpl"]) == []
    finally:
        a.close()
        b.close()


def test_the_lease_clock_is_the_hosts_boot_time() -> None:
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:  # pragma: no cover - Linux has it
        pytest.skip("no CLOCK_BOOTTIME here")
    before = time.clock_gettime(boottime)
    now = lease_clock()
    assert before <= now <= time.clock_gettime(boottime)


def test_an_injected_clock_decides_sqlite_leases(tmp_path: Path) -> None:
    clock = FakeClock()
    a = SQLiteStore(tmp_path / "fake.db", clock=clock)
    b = SQLiteStore(tmp_path / "fake.db", clock=clock)
    try:
        a.attach("a", lease=5)
        a.join()
        a.write([_begin("f-1")])
        b.attach("b", lease=5)
        b.join()
        clock.now += 3.9
        assert not a.lease_expired()
        clock.now += 0.2  # a stops counting on its lease a margin (a fifth of it) before the others may claim
        assert a.lease_expired()
        assert b.claim(["tpl"]) == []
        clock.now += 1.0
        assert [i.exec_id for i in b.claim(["tpl"])] == ["f-1"]  # no real wait: the lease ran out on the clock
        assert a.heartbeat() == "late"
        assert a.lost(["f-1"]) == ["f-1"]
    finally:
        a.close()
        b.close()
