"""Several engines on one PostgreSQL journal: ownership, takeover, fencing (in one process)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import template

from tukio import Engine, Event, Workflow, WorkflowTemplate
from tukio.cluster import LeasedStore, default_node_name
from tukio.store import MemoryStore
from tukio.store.postgres import PostgresStore

Schema = tuple[str, str]
Steps = Callable[[str, Engine], WorkflowTemplate]
RUNS: Counter[tuple[str, str]] = Counter()
GATES: dict[str, asyncio.Event] = {}
STARTED: dict[str, asyncio.Event] = {}


@pytest.fixture
def steps(registered: Callable[..., Any], task_name: Callable[[str], str]) -> Steps:
    """``steps(label, engine)``: the chain a-b-c whose tasks count their runs as (label, task id).

    Every engine loads the same chain (one template version: a takeover runs
    an execution on the version it began with); `engine` is labelled, and a
    task counts its run under the label of the engine that runs it. Task b
    waits on GATES[label] when set.
    """
    RUNS.clear()
    GATES.clear()
    STARTED.clear()
    labels: dict[Engine, str] = {}

    async def cluster_step(event: Event) -> dict[str, Any]:
        tid = asyncio.current_task().template.uid  # type: ignore[union-attr]
        workflow = Workflow.current_workflow()
        [node] = [label for engine, label in labels.items() if workflow in engine.instances]
        RUNS[node, tid] += 1
        if tid == "b":
            STARTED.setdefault(node, asyncio.Event()).set()
            if node in GATES:
                await GATES[node].wait()
        return {**event.data, tid: node}

    name = task_name("cluster")
    registered(name, cluster_step)
    chain = template([("a", name), ("b", name), ("c", name)], {"a": ["b"], "b": ["c"]}, id="cl-chain")

    def chain_for(label: str, engine: Engine) -> WorkflowTemplate:
        labels[engine] = label
        return chain

    return chain_for


async def started(node: str) -> None:
    await asyncio.wait_for(STARTED.setdefault(node, asyncio.Event()).wait(), 10)


class PausableStore(PostgresStore):
    """A store whose heartbeats a test can hold (as a paused process would not renew its lease)."""

    def __init__(self, dsn: str, schema: str) -> None:
        super().__init__(dsn, schema=schema)
        self.going = threading.Event()
        self.going.set()
        self.held = threading.Event()

    def heartbeat(self) -> Any:
        if not self.going.is_set():
            self.held.set()
            self.going.wait(10)
        return super().heartbeat()


@pytest.fixture
def stores(pg_schema: Schema) -> Iterator[Callable[[], PausableStore]]:
    dsn, schema = pg_schema
    made: list[PausableStore] = []

    def new() -> PausableStore:
        made.append(PausableStore(dsn, schema))
        return made[-1]

    yield new
    for s in made:
        s.close()


def test_default_node_names_are_unique_per_engine() -> None:
    assert default_node_name() != default_node_name()


async def test_a_node_needs_a_shared_store() -> None:
    with pytest.raises(ValueError, match="needs a store that several engines can share"):
        Engine(store=MemoryStore(), node="a")
    assert Engine(store=MemoryStore()).node is None
    assert not isinstance(MemoryStore(), LeasedStore)


async def test_recover_never_takes_a_live_nodes_executions(stores: Callable[[], PausableStore], steps: Steps) -> None:
    a = Engine(store=stores(), node="a", lease=30)
    b = Engine(store=stores(), node="b", lease=30)
    assert (a.node, b.node) == ("a", "b")
    await a.load(steps("a", a))
    await b.load(steps("b", b))
    GATES["a"] = asyncio.Event()
    wf = await a.trigger("cl-chain", {"v": 1})
    assert wf is not None
    await started("a")
    await a.flush()
    assert await b.recover() == []  # a is alive: b leaves its execution alone
    assert b.unrecovered == []
    GATES["a"].set()
    await asyncio.wait_for(wf, 10)
    await asyncio.wait_for(asyncio.gather(a.stop(), b.stop()), 10)
    assert Counter({("a", "a"): 1, ("a", "b"): 1, ("a", "c"): 1}) == RUNS


async def _taken_over(exec_id: str, *engines: Engine, within: float = 10.0) -> Any:
    """The one copy of `exec_id` the `engines` run (fails if none shows up in time, or several do)."""

    async def poll() -> Any:
        while True:
            copies = [w for e in engines for w in e.instances if w.uid == exec_id]
            if copies:
                [copy] = copies
                return copy
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(poll(), within)


async def test_a_dead_nodes_execution_is_taken_over_once_and_its_zombie_fenced(
    stores: Callable[[], PausableStore], steps: Steps, caplog: pytest.LogCaptureFixture
) -> None:
    a_store = stores()
    a = Engine(store=a_store, node="a", lease=30)
    b = Engine(store=stores(), node="b", lease=30)
    c = Engine(store=stores(), node="c", lease=30)
    for engine, node in ((a, "a"), (b, "b"), (c, "c")):
        await engine.load(steps(node, engine))
    GATES["a"] = asyncio.Event()
    wf = await a.trigger("cl-chain", {"v": 1})
    assert wf is not None
    await started("a")
    await a.flush()
    a_store.leave()  # a looks dead (as after a pause past its lease) while its task b still runs
    taken = await asyncio.gather(b.recover(), c.recover())
    # One node took it, the other found nothing; the claim may also come from
    # a node's heartbeat running at the same moment as the recover() calls.
    assert sum(len(t) for t in taken) <= 1
    resumed = await _taken_over(wf.uid, b, c)
    await asyncio.wait_for(resumed, 10)
    # The zombie's task b ends now: its write is refused, its copy cancelled.
    GATES["a"].set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(wf, 10)
    assert "workflow cancelled on node a: its writes were refused" in caplog.text
    await asyncio.gather(b.flush(), c.flush())
    report = a_store.load(wf.uid)
    assert report["exec"]["state"] == "finished"
    winner = resumed.tasks_by_id["c"].outputs["c"]
    assert winner in ("b", "c")
    assert [t["exec"]["outputs"][t["id"]] for t in report["tasks"]] == ["a", winner, winner]
    # a ran a and b; the winner ran b again (it was not recorded done) and c; nothing else ran.
    assert Counter({("a", "a"): 1, ("a", "b"): 1, (winner, "b"): 1, (winner, "c"): 1}) == RUNS
    await asyncio.wait_for(asyncio.gather(a.stop(), b.stop(), c.stop()), 10)


async def test_a_restarted_node_takes_its_executions_back_and_fences_the_old_one(
    stores: Callable[[], PausableStore], steps: Steps, caplog: pytest.LogCaptureFixture
) -> None:
    old = Engine(store=stores(), node="a", lease=30)
    await old.load(steps("old", old))
    GATES["old"] = asyncio.Event()
    wf = await old.trigger("cl-chain", {"v": 1})
    assert wf is not None
    await started("old")
    await old.flush()
    new_store = stores()
    new = Engine(store=new_store, node="a", lease=30)
    await new.load(steps("new", new))
    [back] = await new.recover()  # a new epoch: a is alive, and it is a
    assert back.uid == wf.uid
    await asyncio.wait_for(back, 10)
    GATES["old"].set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(wf, 10)
    assert "workflow cancelled on node a" in caplog.text
    await new.flush()
    assert new_store.load(wf.uid)["exec"]["state"] == "finished"
    assert Counter({("old", "a"): 1, ("old", "b"): 1, ("new", "b"): 1, ("new", "c"): 1}) == RUNS
    await asyncio.wait_for(asyncio.gather(old.stop(), new.stop()), 10)


async def test_heartbeats_claim_dead_nodes_work_by_themselves(
    stores: Callable[[], PausableStore], steps: Steps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    seed = stores()
    seed.attach("gone", lease=30)
    gone = Engine(store=seed, node="gone", lease=30)
    await gone.load(steps("gone", gone))
    GATES["gone"] = asyncio.Event()
    wf = await gone.trigger("cl-chain", {"v": 2})
    assert wf is not None
    await started("gone")
    await gone.flush()
    seed.leave()
    live = Engine(store=stores(), node="live", lease=0.3)  # beats every 0.1 s
    await live.load(steps("live", live))
    for _ in range(500):  # the heartbeat claims and resumes it, nobody asks (5 s at most)
        if live.instances:
            break
        await asyncio.sleep(0.01)
    [resumed] = live.instances
    await asyncio.wait_for(resumed, 10)
    assert "took over 1 workflow(s)" in caplog.text
    assert RUNS["live", "c"] == 1
    GATES["gone"].set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(wf, 10)
    await asyncio.wait_for(asyncio.gather(gone.stop(), live.stop()), 10)


async def cancelled_within(wf: Any, seconds: float = 10) -> None:
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(wf, seconds)


async def test_a_node_replaced_by_a_restart_cancels_its_workflows(
    stores: Callable[[], PausableStore], steps: Steps, caplog: pytest.LogCaptureFixture
) -> None:
    old = Engine(store=stores(), node="r", lease=0.3)
    await old.load(steps("old", old))
    GATES["old"] = asyncio.Event()
    wf = await old.trigger("cl-chain", {"v": 1})
    assert wf is not None
    await started("old")
    await old.flush()
    again = stores()
    again.attach("r", lease=30)
    await asyncio.to_thread(again.join)  # "r" restarted elsewhere
    await cancelled_within(wf)  # its next heartbeat says so
    assert "node r was restarted elsewhere" in caplog.text
    GATES["old"].set()
    await asyncio.wait_for(old.stop(), 10)


async def test_a_late_node_cancels_what_was_taken_over(
    stores: Callable[[], PausableStore], steps: Steps, caplog: pytest.LogCaptureFixture
) -> None:
    late_store = stores()
    late = Engine(store=late_store, node="late", lease=0.3)
    await late.load(steps("late", late))
    GATES["late"] = asyncio.Event()
    wf = await late.trigger("cl-chain", {"v": 1})
    assert wf is not None
    await started("late")
    await late.flush()
    other = stores()
    other.attach("other", lease=30)
    late_store.going.clear()  # "late" stops renewing its lease (its next heartbeat waits)
    assert await asyncio.to_thread(late_store.held.wait, 10)
    await asyncio.to_thread(late_store.leave)
    assert [i.exec_id for i in await asyncio.to_thread(other.claim, ["cl-chain"])] == [wf.uid]
    late_store.going.set()
    await cancelled_within(wf)  # the next heartbeat finds the lease had expired, and what is gone
    assert "node late missed its lease" in caplog.text
    assert "taken over by another node" in caplog.text
    GATES["late"].set()
    await asyncio.wait_for(late.stop(), 10)


async def test_data_received_reaches_listening_tasks_on_every_node(
    stores: Callable[[], PausableStore], registered: Callable[..., Any]
) -> None:
    got: list[tuple[Any, str | None]] = []
    ready = asyncio.Event()

    async def listener(event: Event) -> None:
        ready.set()
        while len(got) < 3:
            seen = await asyncio.current_task().queue.get()  # type: ignore[union-attr]
            got.append((seen.data, seen.topic))

    registered("cluster-listener", listener)
    here = Engine(store=stores(), node="here", lease=30)
    twin = Engine(store=stores(), node="twin", lease=30)  # same process, same loop, same broker
    await here.load(template([("wait", "cluster-listener", {"topics": ["news"]})], {}, id="l", topics=[]))
    wf = await here.trigger("l", {})
    assert wf is not None
    await ready.wait()
    elsewhere = stores()  # another node: it publishes what it receives
    elsewhere.attach("elsewhere", lease=30)
    await asyncio.to_thread(elsewhere.publish, {"n": 1}, "news")
    await asyncio.to_thread(elsewhere.publish, {"big": "x" * 100_000}, "news")  # payloads of any size
    await twin.data_received({"n": 3}, topic="news")  # dispatched here once, not again from the journal
    await asyncio.wait_for(wf, 10)
    # Each event reached the task once; those of the other node in the order it published them.
    remote = [({"n": 1}, "news"), ({"big": "x" * 100_000}, "news")]
    assert [g for g in got if g in remote] == remote
    assert [g for g in got if g not in remote] == [({"n": 3}, "news")]
    # What this process received was published for the other nodes, in order.
    shared = await asyncio.to_thread(elsewhere.events_after, 0)
    assert [(origin, topic, data) for _, origin, topic, data in shared] == [("twin", "news", {"n": 3})]
    assert await asyncio.to_thread(elsewhere.prune_events, 3600) == 0
    assert await asyncio.to_thread(elsewhere.prune_events, 0) == 3
    await asyncio.wait_for(asyncio.gather(here.stop(), twin.stop()), 10)


async def test_a_cluster_closes_when_a_wake_up_comes_with_the_close(tmp_path: Any) -> None:
    """The event reader ends even when its wake-up and the close come in the same turn of the loop.

    (On Python 3.10 and 3.11, `asyncio.wait_for` then returned the wake-up and
    swallowed the cancellation: the reader ran on and the engine never stopped.)
    """
    from tukio.store import SQLiteStore

    store = SQLiteStore(tmp_path / "j.db")
    engine = Engine(store=store, node="a")
    try:
        cluster = engine._cluster
        assert cluster is not None
        for _ in range(50):  # until the reader waits for its next look
            await asyncio.sleep(0.01)
        cluster._wake.set()
        cluster.close(leave=False)
        await asyncio.wait_for(cluster.wait_closed(), 5)
    finally:
        await asyncio.wait_for(engine.stop(force=True), 10)
        store.close()
