"""Flow control across engines sharing a store (SQLite file, PostgreSQL schema): `tukio.flow.shared`.

Several engines in one process, each with its own store object on one
journal, as separate processes would be: the limits, the queue, the keys
and the delays are the store's, not each engine's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tukio import Engine, WorkflowTemplate
from tukio.flow import VirtualClock, key_exec_id
from tukio.flow.shared import SharedFlow
from tukio.store import PostgresStore, SQLiteStore
from tukio.store._flowsql import QUEUED

StoreFactory = Callable[[], Any]


@pytest.fixture(params=["sqlite", "postgres"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Makes store objects on one journal (closed after the test)."""
    made: list[Any] = []
    if request.param == "sqlite":

        def make() -> Any:
            made.append(SQLiteStore(tmp_path / "journal.db"))
            return made[-1]

    else:
        pg_schema = request.getfixturevalue("pg_schema")

        def make() -> Any:
            made.append(PostgresStore(pg_schema[0], schema=pg_schema[1]))
            return made[-1]

    yield make
    for store in made:
        store.close()


class Bodies:
    """What the task bodies did: how many run now, the most at once, every run's data; a gate they wait on."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.runs: list[Any] = []
        self.gate = asyncio.Event()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    async def body(self, data: Any) -> Any:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.runs.append(data)
        self._check()
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
            self._check()
        return data

    def _check(self) -> None:
        for condition, future in list(self._waiters):
            if condition() and not future.done():
                future.set_result(None)

    async def until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until `condition()` holds (checked as bodies start and end)."""
        if condition():
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((condition, future))
        await asyncio.wait_for(future, timeout)


@pytest.fixture
def bodies(task_name: Callable[[str], str], registered: Callable[..., Any]) -> tuple[str, Bodies]:
    name = task_name("gated")
    state = Bodies()

    async def gated(event: Any) -> Any:
        return await state.body(getattr(event, "data", event))

    registered(name, gated)
    return name, state


def _template(task: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "shared",
        "policy": "start-new",
        "tasks": [{"id": "t1", "name": task}],
        "graph": {"t1": []},
        **fields,
    }


@pytest.fixture
async def engines(journal: StoreFactory) -> AsyncIterator[Callable[..., Any]]:
    """Makes engines (each with a store of its own on the journal); stops them all after the test."""
    made: list[Engine] = []

    async def make(node: str, template: dict[str, Any] | None = None, **options: Any) -> Engine:
        engine = Engine(store=journal(), node=node, lease=options.pop("lease", 2.0), **options)
        made.append(engine)
        if template is not None:
            await engine.load(WorkflowTemplate.from_dict(template))
        return engine

    yield make
    for engine in made:
        if not engine.done():
            await asyncio.wait_for(engine.stop(force=True), 10)


async def _one_running_one_queued(engine: Engine, state: Bodies) -> tuple[Any, Any]:
    """Trigger twice a template of concurrency 1 whose bodies wait: the first runs, the second waits."""
    first = await engine.trigger("shared", {"n": 0})
    second = await engine.trigger("shared", {"n": 1})
    assert first is not None
    assert second is not None
    await state.until(lambda: state.running == 1)
    return first, second


async def _queued_in_store(engine: Engine, template_id: str = "shared") -> list[Any]:
    store = engine.store
    assert store is not None
    return await asyncio.to_thread(store.flow_queue, template_id)  # type: ignore[attr-defined]


async def test_a_store_shared_by_engines_gives_them_a_shared_flow(engines: Callable[..., Any]) -> None:
    engine = await engines("a")
    assert isinstance(engine.flow, SharedFlow)


async def test_concurrency_holds_across_engines(engines: Callable[..., Any], bodies: tuple[str, Bodies]) -> None:
    task, state = bodies
    a = await engines("a", _template(task, concurrency=2))
    b = await engines("b", _template(task, concurrency=2))
    workflows = []
    for i in range(10):
        workflow = await (a if i % 2 else b).trigger("shared", {"i": i})
        assert workflow is not None
        workflows.append(workflow)
    await state.until(lambda: state.running == 2)
    queued = await _queued_in_store(a)
    assert len(queued) == 8
    assert {row.owner for row in queued} == {"a", "b"}
    assert len(a.queued()) + len(b.queued()) == 8
    assert all(q.state == QUEUED for q in a.queued())
    state.gate.set()
    await asyncio.wait_for(asyncio.gather(*workflows), 20)
    assert state.peak == 2
    assert sorted(r["i"] for r in state.runs) == list(range(10))
    assert await _queued_in_store(a) == []


async def test_the_queue_is_fifo_within_a_priority(engines: Callable[..., Any], bodies: tuple[str, Bodies]) -> None:
    task, state = bodies
    a = await engines("a", _template(task, concurrency=1))
    first = await a.trigger("shared", {"i": "first"})
    await state.until(lambda: state.running == 1)
    later = [
        await a.trigger("shared", {"i": "low-1"}, priority=0),
        await a.trigger("shared", {"i": "high"}, priority=5),
        await a.trigger("shared", {"i": "low-2"}, priority=0),
        await a.trigger("shared", {"i": "mid"}, priority=1),
    ]
    assert [q.position for q in a.queued()] == [1, 2, 3, 4]
    assert [q.workflow.uid for q in a.queued()][:1] == [later[1].uid]  # type: ignore[union-attr]
    state.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *later), 20)  # type: ignore[arg-type]
    assert [r["i"] for r in state.runs] == ["first", "high", "mid", "low-1", "low-2"]


async def test_concurrency_key_limits_each_value(engines: Callable[..., Any], bodies: tuple[str, Bodies]) -> None:
    task, state = bodies
    a = await engines("a", _template(task, concurrency=1, concurrency_key="customer"))
    b = await engines("b", _template(task, concurrency=1, concurrency_key="customer"))
    w1 = await a.trigger("shared", {"customer": "acme", "n": 1})
    w2 = await b.trigger("shared", {"customer": "acme", "n": 2})
    w3 = await b.trigger("shared", {"customer": "globex", "n": 3})
    await state.until(lambda: state.running == 2)
    assert sorted(r["n"] for r in state.runs) == [1, 3]
    queued = await _queued_in_store(a)
    assert [(row.owner, row.part) for row in queued] == [("b", '"acme"')]
    state.gate.set()
    await asyncio.wait_for(asyncio.gather(w1, w2, w3), 20)  # type: ignore[arg-type]
    assert state.peak == 2


async def test_an_idempotency_key_starts_one_execution_across_engines_and_restarts(
    engines: Callable[..., Any], bodies: tuple[str, Bodies]
) -> None:
    task, state = bodies
    state.gate.set()
    a = await engines("a", _template(task))
    b = await engines("b", _template(task))
    first = await a.trigger("shared", {"n": 1}, key="order-42")
    assert first is not None
    assert await a.trigger("shared", {"n": 2}, key="order-42") is first
    assert await b.trigger("shared", {"n": 3}, key="order-42") is None  # held by a's
    await asyncio.wait_for(first, 10)
    await a.flush()
    await asyncio.wait_for(a.stop(), 10)
    c = await engines("c", _template(task))
    assert await c.trigger("shared", {"n": 4}, key="order-42") is None
    other = await c.trigger("shared", {"n": 5}, key="order-43")
    assert other is not None
    assert other.uid != first.uid
    await asyncio.wait_for(other, 10)
    assert [r["n"] for r in state.runs] == [1, 5]


async def test_two_engines_racing_on_one_key_start_it_once(
    engines: Callable[..., Any], bodies: tuple[str, Bodies]
) -> None:
    task, state = bodies
    state.gate.set()
    a = await engines("a", _template(task))
    b = await engines("b", _template(task))
    got = await asyncio.gather(*(e.trigger("shared", {"e": e.node}, key="race") for e in (a, b, a, b)))
    started = [w for w in got if w is not None]
    assert len({w.uid for w in started}) == 1
    await asyncio.wait_for(asyncio.gather(*started), 10)
    assert len(state.runs) == 1


async def test_rate_limits_starts_across_engines(engines: Callable[..., Any], bodies: tuple[str, Bodies]) -> None:
    task, state = bodies
    state.gate.set()
    rate = {"limit": 3, "period": 3600}
    a = await engines("a", _template(task, rate=rate))
    b = await engines("b", _template(task, rate=rate))
    workflows = [await (a if i % 2 else b).trigger("shared", {"i": i}) for i in range(7)]
    await state.until(lambda: len(state.runs) == 3)
    await a.flush()
    await b.flush()
    assert len(await _queued_in_store(a)) == 4
    assert sum(not w.done() for w in workflows if w is not None) == 4
    assert len(state.runs) == 3


async def test_a_queued_execution_outlives_its_engine(
    engines: Callable[..., Any], bodies: tuple[str, Bodies], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping an engine leaves its queued triggers in the store; another engine runs them."""
    monkeypatch.setattr("tukio.flow.shared.SWEEP", 0.2)  # b finds a's rows at its first sweeps
    task, state = bodies
    a = await engines("a", _template(task, concurrency=1))
    blocker = await a.trigger("shared", {"n": 0})
    queued = [await a.trigger("shared", {"n": n}) for n in (1, 2)]
    await state.until(lambda: state.running == 1)
    await asyncio.wait_for(a.stop(force=True), 10)
    assert blocker is not None
    assert blocker.cancelled()
    assert all(w is not None and w.cancelled() for w in queued)  # here: the rows stay queued in the store
    b = await engines("b", _template(task, concurrency=1))
    assert len(await _queued_in_store(b)) == 2
    state.gate.set()
    await state.until(lambda: sorted(r["n"] for r in state.runs) == [0, 1, 2], timeout=20)
    assert state.peak == 1


async def test_a_restarted_node_runs_what_it_had_queued(
    engines: Callable[..., Any], bodies: tuple[str, Bodies]
) -> None:
    task, state = bodies
    a = await engines("a", _template(task, concurrency=1))
    await a.trigger("shared", {"n": 0})
    await a.trigger("shared", {"n": 1}, not_before=0.2)
    await state.until(lambda: state.running == 1)
    await asyncio.wait_for(a.stop(force=True), 10)
    state.gate.set()
    again = await engines("a", _template(task, concurrency=1))
    await again.recover()
    await state.until(lambda: [r["n"] for r in state.runs].count(1) == 1, timeout=20)
    assert [r["n"] for r in state.runs].count(1) == 1


async def test_not_before_waits_in_the_store(engines: Callable[..., Any], bodies: tuple[str, Bodies]) -> None:
    task, state = bodies
    state.gate.set()
    a = await engines("a", _template(task))
    later = await a.trigger("shared", {"n": 1}, not_before=0.3)
    assert later is not None
    rows = await _queued_in_store(a)
    assert [row.exec_id for row in rows] == [later.uid]
    assert rows[0].due is not None
    assert a.queued()[0].position is None  # waiting for its time, not in line
    await asyncio.wait_for(later, 10)
    assert state.runs == [{"n": 1}]


async def test_cancelling_a_queued_workflow_cancels_its_row(
    engines: Callable[..., Any], bodies: tuple[str, Bodies]
) -> None:
    task, state = bodies
    a = await engines("a", _template(task, concurrency=1))
    first, second = await _one_running_one_queued(a, state)
    second.cancel()
    await asyncio.wait_for(asyncio.wait([second]), 5)
    state.gate.set()
    await asyncio.wait_for(first, 10)
    await a.flush()
    store = a.store
    assert store is not None
    for _ in range(100):  # the pump records the cancel on its next turn
        if await _queued_in_store(a) == []:
            break
        await asyncio.sleep(0.02)
    assert await _queued_in_store(a) == []
    assert await asyncio.to_thread(lambda: store.load(second.uid)["exec"]["state"]) == "cancelled"
    assert [r["n"] for r in state.runs] == [0]


async def test_max_running_limits_one_node(engines: Callable[..., Any], bodies: tuple[str, Bodies]) -> None:
    task, state = bodies
    a = await engines("a", _template(task), max_running=1)
    workflows = [await a.trigger("shared", {"n": n}) for n in range(3)]
    await state.until(lambda: state.running == 1)
    state.gate.set()
    await asyncio.wait_for(asyncio.gather(*workflows), 10)  # type: ignore[arg-type]
    assert state.peak == 1


async def test_data_received_queues_in_the_store(engines: Callable[..., Any], bodies: tuple[str, Bodies]) -> None:
    task, state = bodies
    a = await engines("a", _template(task, concurrency=1, topics=["orders"]))
    started = []
    for n in range(4):
        started.extend(await a.data_received({"n": n}, topic="orders") or [])
    assert len(started) == 4
    await state.until(lambda: state.running == 1)
    assert len(await _queued_in_store(a)) == 3
    state.gate.set()
    await asyncio.wait_for(asyncio.gather(*started), 10)
    assert state.peak == 1


@pytest.fixture
async def scheduled(
    journal: StoreFactory, bodies: tuple[str, Bodies]
) -> AsyncIterator[tuple[VirtualClock, list[Engine]]]:
    """Engines a and b on one journal and one virtual clock (9:58), with the template scheduled every 5 minutes."""
    task, state = bodies
    state.gate.set()
    clock = VirtualClock(start=datetime(2026, 3, 2, 9, 58, tzinfo=timezone.utc).timestamp())
    template = WorkflowTemplate.from_dict(_template(task, schedule={"cron": "*/5 * * * *"}))
    made = [Engine(store=journal(), node=n, lease=2.0, flow=SharedFlow(clock=clock)) for n in ("a", "b")]
    try:
        for engine in made:
            await engine.load(template)
        yield clock, made
    finally:
        for engine in made:
            await asyncio.wait_for(engine.stop(force=True), 10)


async def _fired(engines: list[Engine]) -> None:
    """Wait until each engine's firing of the ticks due has returned."""
    for engine in engines:
        await asyncio.wait_for(asyncio.gather(*engine._schedules._firing.values()), 10)


async def test_a_schedule_tick_fires_once_across_engines(
    scheduled: tuple[VirtualClock, list[Engine]], bodies: tuple[str, Bodies]
) -> None:
    clock, made = scheduled
    _, state = bodies
    clock.advance(3 * 60)  # 10:01: the 10:00 tick, on both engines
    await state.until(lambda: len(state.runs) == 1)
    await _fired(made)
    for engine in made:
        await engine.flush()
    store = made[0].store
    assert store is not None
    infos = await asyncio.to_thread(store.executions, template_id="shared")
    assert [i.exec_id for i in infos] == [key_exec_id("shared", "schedule:2026-03-02T10:00:00+00:00")]
    assert [r["tick"] for r in state.runs] == ["2026-03-02T10:00:00+00:00"]


async def test_a_paused_schedule_is_paused_on_every_engine(
    scheduled: tuple[VirtualClock, list[Engine]], bodies: tuple[str, Bodies]
) -> None:
    clock, made = scheduled
    _, state = bodies
    await made[0].pause_schedule("shared")  # on a only: b reads the pause from the store
    clock.advance(3 * 60)  # the 10:00 tick
    await _fired(made)
    assert state.runs == []
    await made[1].resume_schedule("shared")  # on b: a's own pause still holds on a
    clock.advance(5 * 60)  # the 10:05 tick fires once (from b)
    await state.until(lambda: len(state.runs) == 1)
    await _fired(made)
    assert [r["tick"] for r in state.runs] == ["2026-03-02T10:05:00+00:00"]


async def test_a_store_that_fails_a_step_fails_those_triggers_alone(
    engines: Callable[..., Any], bodies: tuple[str, Bodies], monkeypatch: pytest.MonkeyPatch
) -> None:
    task, state = bodies
    state.gate.set()
    a = await engines("a", _template(task, concurrency=1))
    store = a.store
    real = store.flow_step  # type: ignore[union-attr]

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("PostgreSQL unreachable (a test)")

    monkeypatch.setattr(store, "flow_step", broken)
    with pytest.raises(ConnectionError, match="a test"):
        await a.trigger("shared", {"n": 0})
    monkeypatch.setattr(store, "flow_step", real)
    after = await a.trigger("shared", {"n": 1})
    assert after is not None
    await asyncio.wait_for(after, 10)
    assert state.runs == [{"n": 1}]


async def test_shared_flow_needs_a_shared_store() -> None:
    from tukio.store import MemoryStore

    with pytest.raises(ValueError, match="SharedFlow needs a store shared by engines"):
        Engine(store=MemoryStore(), flow=SharedFlow())


def test_partition_texts_are_equal_for_equal_values() -> None:
    from tukio.flow.shared import partition_text

    assert partition_text(None) == ""
    assert partition_text({"b": 1, "a": 2}) == partition_text({"a": 2, "b": 1})
    assert partition_text("acme") == '"acme"'
    assert partition_text(frozenset({1})) == "frozenset({1})"  # not JSON: its repr


async def test_rows_admitted_by_a_step_whose_answer_was_lost_still_start(
    engines: Callable[..., Any], bodies: tuple[str, Bodies], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step commits, then its connection drops: what it admitted for this engine starts at the next sweep."""
    task, state = bodies
    a = await engines("a", _template(task, concurrency=1))
    first, second = await _one_running_one_queued(a, state)
    store = a.store
    real = store.flow_step  # type: ignore[union-attr]
    lost: list[Any] = []

    async def answer_lost(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)
        if result.launch and not lost:
            lost.append(result.launch)
            raise ConnectionError("the answer was lost (a test)")
        return result

    monkeypatch.setattr(store, "flow_step", answer_lost)
    state.gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert lost == [[second.uid]]
    assert [r["n"] for r in state.runs] == [0, 1]


async def test_an_operator_cancels_a_queued_execution(engines: Callable[..., Any], bodies: tuple[str, Bodies]) -> None:
    """`tukio executions list --state queued` and `cancel` reach the store's queue; the engine drops its copy."""
    from tukio.manage import Manager

    task, state = bodies
    a = await engines("a", _template(task, concurrency=1))
    first, second = await _one_running_one_queued(a, state)
    manager = Manager(a.store)
    listed = await manager.list(state="queued")
    assert [s.id for s in listed.items] == [second.uid]
    assert await manager.cancel(second.uid) == "cancelled"
    assert await manager.cancel(second.uid) == "cancelled"  # (already: its state)
    await asyncio.wait_for(asyncio.wait([second]), 10)  # dropped at the engine's next look at the store
    assert second.cancelled()
    state.gate.set()
    await asyncio.wait_for(first, 10)
    await a.flush()
    assert [r["n"] for r in state.runs] == [0]
    assert (await manager.get(second.uid)).state == "cancelled"


async def test_inspect_shows_the_queue_with_positions(
    tmp_path: Path, bodies: tuple[str, Bodies], capsys: pytest.CaptureFixture[str]
) -> None:
    from tukio.cli import main

    task, state = bodies
    path = tmp_path / "journal.db"
    store = SQLiteStore(path)
    engine = Engine(store=store, node="a")
    try:
        await engine.load(WorkflowTemplate.from_dict(_template(task, concurrency=1, concurrency_key="c")))
        running = await engine.trigger("shared", {"c": "x"})
        first = await engine.trigger("shared", {"c": "x"})
        urgent = await engine.trigger("shared", {"c": "x"}, priority=9)
        later = await engine.trigger("shared", {"c": "y"}, not_before=3600)
        assert running is not None
        assert first is not None
        assert urgent is not None
        assert later is not None
        await state.until(lambda: state.running == 1)
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["inspect", "--store", str(path), "--state", "queued"]) == 0
        out = capsys.readouterr().out
        lines = [
            line.split() for line in out.splitlines() if first.uid in line or urgent.uid in line or later.uid in line
        ]
        queue = [words for words in lines if words[0] in ("1", "2", "due")]
        assert [(w[0], w[1]) for w in queue] == [("1", urgent.uid), ("2", first.uid), ("due", later.uid)]
        assert "priority 9" in out
        assert 'key "x"' in out
        assert "not before" in out
        assert await asyncio.to_thread(main, ["inspect", "--store", str(path), "--state", "queued", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert {item["id"]: item["position"] for item in listed} == {urgent.uid: 1, first.uid: 2, later.uid: None}
    finally:
        state.gate.set()
        await asyncio.wait_for(engine.stop(force=True), 10)
        store.close()


async def test_a_step_waits_for_a_file_another_process_is_writing(tmp_path: Path, bodies: tuple[str, Bodies]) -> None:
    """A lone trigger's step runs on the loop unless the file is locked: then it waits in a thread."""
    import sqlite3

    task, state = bodies
    state.gate.set()
    path = tmp_path / "journal.db"
    store = SQLiteStore(path)
    engine = Engine(store=store, node="a")
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await engine.load(WorkflowTemplate.from_dict(_template(task, concurrency=5)))
        first = await engine.trigger("shared", {"n": 0})  # (joins the node, runs a step)
        assert first is not None
        await asyncio.wait_for(first, 10)
        await engine.flush()  # the journal is idle: the next step tries the loop first
        other.execute("BEGIN IMMEDIATE")  # another process writes
        asyncio.get_running_loop().call_later(0.3, other.execute, "COMMIT")
        second = await asyncio.wait_for(engine.trigger("shared", {"n": 1}), 10)
        assert second is not None
        await asyncio.wait_for(second, 10)
        assert sorted(r["n"] for r in state.runs) == [0, 1]
    finally:
        other.close()
        await asyncio.wait_for(engine.stop(force=True), 10)
        store.close()
