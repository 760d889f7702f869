"""Flow control in the engine: concurrency, keys, priorities, delays, rates, backpressure, stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from support import until

from tukio import Engine, WorkflowTemplate
from tukio.flow import FlowError, LocalFlow, VirtualClock, key_exec_id
from tukio.utils import FutureState


class Gate:
    """A registered task that records its data and waits until released."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.release = asyncio.Event()

    async def task(self, event: Any) -> Any:
        data = getattr(event, "data", event)
        self.started.append(data)
        await self.release.wait()
        if isinstance(data, dict) and data.get("fail"):
            raise RuntimeError("told to fail")
        return data


@pytest.fixture
def gate(registered: Callable[..., Any], task_name: Callable[[str], str]) -> tuple[Gate, str]:
    g = Gate()
    name = task_name("gate")
    registered(name, g.task)
    return g, name


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
async def flow_engine(clock: VirtualClock) -> AsyncIterator[Engine]:
    engine = Engine(flow=LocalFlow(clock=clock))
    yield engine
    await asyncio.wait_for(engine.stop(force=True), 5)


def flow_template(uid: str, task: str, **fields: Any) -> WorkflowTemplate:
    return WorkflowTemplate.from_dict(
        {"id": uid, "policy": "start-new", "tasks": [{"id": "a", "name": task}], **fields}
    )


def ids(data: list[Any]) -> list[Any]:
    return [d["i"] for d in data]


async def test_at_most_n_run_the_rest_queue_and_start_as_slots_free(
    flow_engine: Engine, gate: tuple[Gate, str]
) -> None:
    g, task = gate
    await flow_engine.load(flow_template("limited", task, concurrency=2))
    workflows = [await flow_engine.trigger("limited", {"i": i}) for i in range(5)]
    assert all(w is not None for w in workflows)
    await until(lambda: len(g.started) == 2)
    assert len(flow_engine.running("limited")) == 2
    queued = flow_engine.queued("limited")
    assert [(q.position, q.state, q.workflow) for q in queued] == [
        (1, "queued", workflows[2]),
        (2, "queued", workflows[3]),
        (3, "queued", workflows[4]),
    ]
    assert queued[0].exec_id == workflows[2].uid
    assert queued[0].template_id == "limited"
    assert not workflows[4].done()  # type: ignore[union-attr]
    g.release.set()
    await asyncio.wait_for(asyncio.gather(*workflows), 5)  # type: ignore[arg-type]
    assert ids(g.started) == [0, 1, 2, 3, 4]
    assert flow_engine.queued() == []
    assert flow_engine.flow.running == 0  # type: ignore[attr-defined]


async def test_a_slot_frees_whatever_the_end(flow_engine: Engine, gate: tuple[Gate, str]) -> None:
    g, task = gate
    await flow_engine.load(flow_template("ends", task, concurrency=1, timeout=30))
    first = await flow_engine.trigger("ends", {"i": 0})
    second = await flow_engine.trigger("ends", {"i": 1})
    third = await flow_engine.trigger("ends", {"i": 2, "fail": True})
    fourth = await flow_engine.trigger("ends", {"i": 3})
    assert first
    assert second
    assert third
    assert fourth
    await until(lambda: len(g.started) == 1)
    first.cancel()  # cancelled
    await until(lambda: len(g.started) == 2)
    second.timeout()  # timed out
    await until(lambda: len(g.started) == 3)
    assert first.future_state is FutureState.cancelled
    assert second.future_state is FutureState.timeout
    g.release.set()  # the third's task fails, the workflow ends
    await asyncio.wait_for(asyncio.gather(third, fourth), 5)
    assert ids(g.started) == [0, 1, 2, 3]


async def test_priority_then_fifo(flow_engine: Engine, gate: tuple[Gate, str]) -> None:
    g, task = gate
    await flow_engine.load(flow_template("prio", task, concurrency=1))
    blocker = await flow_engine.trigger("prio", {"i": "blocker"})
    order = [(1, 0), (2, 0), (3, 10), (4, -5), (5, 10), (6, None)]
    workflows = [await flow_engine.trigger("prio", {"i": i}, priority=p) for i, p in order]
    assert [q.priority for q in flow_engine.queued("prio")] == [10, 10, 0, 0, 0, -5]
    g.release.set()
    await asyncio.wait_for(asyncio.gather(blocker, *workflows), 5)  # type: ignore[arg-type]
    assert ids(g.started) == ["blocker", 3, 5, 1, 2, 6, 4]


async def test_concurrency_key_limits_each_value(flow_engine: Engine, gate: tuple[Gate, str]) -> None:
    g, task = gate
    await flow_engine.load(flow_template("per-customer", task, concurrency=1, concurrency_key="customer"))
    workflows = [await flow_engine.trigger("per-customer", {"i": i, "customer": c}) for i, c in enumerate("aabbc")]
    await until(lambda: len(g.started) == 3)
    assert sorted(ids(g.started)) == [0, 2, 4]
    assert [(q.partition, q.position) for q in flow_engine.queued("per-customer")] == [("a", 1), ("b", 2)]
    g.release.set()
    await asyncio.wait_for(asyncio.gather(*workflows), 5)  # type: ignore[arg-type]
    assert sorted(ids(g.started)) == [0, 1, 2, 3, 4]


async def test_data_lacking_the_concurrency_key_fails_alone(
    flow_engine: Engine, gate: tuple[Gate, str], noop: str, caplog: pytest.LogCaptureFixture
) -> None:
    g, task = gate
    await flow_engine.load(flow_template("keyed", task, concurrency=1, concurrency_key="customer"))
    await flow_engine.load(flow_template("plain", noop))
    with pytest.raises(FlowError, match="template keyed: the trigger data has no 'customer' \\(its concurrency_key\\)"):
        await flow_engine.trigger("keyed", {"i": 0})
    with pytest.raises(FlowError, match="must be hashable, got list"):
        await flow_engine.trigger("keyed", {"customer": [1]})
    started = await flow_engine.data_received({"i": 1})
    assert started is not None
    assert [w.template.uid for w in started] == ["plain"]
    assert "template keyed: not started: template keyed: the trigger data has no 'customer'" in caplog.text
    assert flow_engine.queued() == []
    assert g.started == []


async def test_an_idempotency_key_gives_the_same_execution(flow_engine: Engine, clock: VirtualClock, noop: str) -> None:
    await flow_engine.load(flow_template("keys", noop))
    await flow_engine.load(flow_template("other", noop))
    first = await flow_engine.trigger("keys", {"n": 1}, key="order-42")
    assert first is not None
    assert first.uid == key_exec_id("keys", "order-42")
    assert await flow_engine.trigger("keys", {"n": 2}, key="order-42") is first  # while it runs
    await asyncio.wait_for(first, 5)
    assert await flow_engine.trigger("keys", {"n": 3}, key="order-42") is first  # after it ended
    elsewhere = await flow_engine.trigger("other", {}, key="order-42")
    assert elsewhere is not None
    assert elsewhere is not first
    clock.advance(86_400)  # past the retention
    again = await flow_engine.trigger("keys", {"n": 4}, key="order-42")
    assert again is not None
    assert again is not first
    assert again.uid == first.uid
    await asyncio.wait_for(asyncio.gather(elsewhere, again), 5)


async def test_a_queued_execution_is_found_by_its_key(flow_engine: Engine, gate: tuple[Gate, str]) -> None:
    g, task = gate
    await flow_engine.load(flow_template("queued-key", task, concurrency=1))
    running = await flow_engine.trigger("queued-key", {"i": 0})
    waiting = await flow_engine.trigger("queued-key", {"i": 1}, key="k")
    assert await flow_engine.trigger("queued-key", {"i": 2}, key="k") is waiting
    assert [q.key for q in flow_engine.queued()] == ["k"]
    g.release.set()
    await asyncio.wait_for(asyncio.gather(running, waiting), 5)  # type: ignore[arg-type]
    assert ids(g.started) == [0, 1]


async def test_not_before_delays_the_start(flow_engine: Engine, clock: VirtualClock, noop: str) -> None:
    await flow_engine.load(flow_template("later", noop))
    in_a_minute = await flow_engine.trigger("later", {}, not_before=60)
    at_a_time = await flow_engine.trigger(
        "later", {}, not_before=datetime.fromtimestamp(clock.time(), timezone.utc) + timedelta(seconds=30)
    )
    past = await flow_engine.trigger("later", {}, not_before=datetime(2000, 1, 1, tzinfo=timezone.utc))
    assert in_a_minute
    assert at_a_time
    assert past
    await asyncio.wait_for(past, 5)
    queued = flow_engine.queued("later")
    assert [(q.workflow, q.position) for q in queued] == [(at_a_time, None), (in_a_minute, None)]
    assert queued[1].not_before == datetime.fromtimestamp(clock.time() + 60, timezone.utc)
    clock.advance(30)
    await asyncio.wait_for(at_a_time, 5)
    assert not in_a_minute.done()
    clock.advance(30)
    await asyncio.wait_for(in_a_minute, 5)
    assert flow_engine.queued() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"not_before": datetime(2030, 1, 1)}, "aware datetime"),
        ({"not_before": -1}, "not_before must be an aware datetime or a delay of 0 to"),
        ({"not_before": float("nan")}, "got nan"),
        ({"not_before": "soon"}, "got 'soon'"),
        ({"key": ""}, "key must be a non-empty string, got ''"),
        ({"key": 5}, "key must be a non-empty string, got 5"),
        ({"priority": 1.5}, "priority must be an integer, got 1.5"),
        ({"priority": True}, "priority must be an integer, got True"),
    ],
)
async def test_bad_trigger_arguments(flow_engine: Engine, noop: str, kwargs: dict[str, Any], message: str) -> None:
    await flow_engine.load(flow_template("args", noop))
    with pytest.raises(FlowError, match=message):
        await flow_engine.trigger("args", {}, **kwargs)
    assert flow_engine.instances == []


async def test_cancelling_a_queued_or_delayed_execution_drops_it(flow_engine: Engine, gate: tuple[Gate, str]) -> None:
    g, task = gate
    await flow_engine.load(flow_template("drop", task, concurrency=1))
    running = await flow_engine.trigger("drop", {"i": 0})
    dropped = await flow_engine.trigger("drop", {"i": 1})
    delayed = await flow_engine.trigger("drop", {"i": 2}, not_before=3600)
    kept = await flow_engine.trigger("drop", {"i": 3})
    assert running
    assert dropped
    assert delayed
    assert kept
    assert dropped.cancel()
    assert delayed.cancel()
    assert dropped.future_state is FutureState.cancelled
    await until(lambda: len(flow_engine.queued()) == 1)
    g.release.set()
    await asyncio.wait_for(asyncio.gather(running, kept), 5)
    assert ids(g.started) == [0, 3]


async def test_rate_limit_is_a_sliding_window(flow_engine: Engine, clock: VirtualClock, noop: str) -> None:
    await flow_engine.load(flow_template("rated", noop, rate={"limit": 2, "period": 10}))
    workflows = [await flow_engine.trigger("rated", {"i": i}) for i in range(5)]
    assert [w is not None and w.future_state for w in workflows]
    assert len(flow_engine.queued("rated")) == 3
    clock.advance(9.9)
    assert len(flow_engine.queued("rated")) == 3
    clock.advance(0.1)
    assert len(flow_engine.queued("rated")) == 1
    clock.advance(10)
    assert flow_engine.queued("rated") == []
    await asyncio.wait_for(asyncio.gather(*workflows), 5)  # type: ignore[arg-type]


async def test_data_received_queues_without_parking_coroutines(flow_engine: Engine, gate: tuple[Gate, str]) -> None:
    g, task = gate
    await flow_engine.load(flow_template("burst", task, concurrency=5, topics=["burst"]))
    before = len(asyncio.all_tasks())
    workflows = []
    for i in range(2000):
        started = await flow_engine.data_received({"i": i}, topic="burst")
        assert started is not None
        workflows.extend(started)
    await until(lambda: len(g.started) == 5)
    # Five workflows run (a task each); 1995 wait as queue entries, not as tasks.
    assert len(asyncio.all_tasks()) - before <= 5
    assert len(flow_engine.queued("burst")) == 1995
    g.release.set()
    await asyncio.wait_for(asyncio.gather(*workflows), 30)
    assert sorted(ids(g.started)) == list(range(2000))


async def test_max_running_bounds_the_engine_and_templates_take_turns(
    gate: tuple[Gate, str], registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    g, task = gate
    engine = Engine(max_running=2)
    await engine.load(flow_template("one", task))
    await engine.load(flow_template("two", task))
    workflows = [await engine.trigger("one", {"i": f"one{i}"}) for i in range(4)]
    workflows += [await engine.trigger("two", {"i": f"two{i}"}) for i in range(2)]
    await until(lambda: len(g.started) == 2)
    assert len(engine.instances) == 2
    assert len(engine.queued()) == 4
    g.release.set()
    await asyncio.wait_for(asyncio.gather(*workflows), 5)  # type: ignore[arg-type]
    assert ids(g.started)[:4] == ["one0", "one1", "one2", "two0"]
    await asyncio.wait_for(engine.stop(), 5)
    with pytest.raises(ValueError, match="max_running must be a positive integer, got 0"):
        Engine(max_running=0)
    with pytest.raises(ValueError, match="give max_running to the flow control"):
        Engine(max_running=1, flow=LocalFlow())


async def test_stop_cancels_what_waits_and_starts_nothing_more(clock: VirtualClock, gate: tuple[Gate, str]) -> None:
    g, task = gate
    engine = Engine(flow=LocalFlow(clock=clock))
    await engine.load(flow_template("stopping", task, concurrency=1))
    running = await engine.trigger("stopping", {"i": 0})
    queued = await engine.trigger("stopping", {"i": 1})
    delayed = await engine.trigger("stopping", {"i": 2}, not_before=10)
    assert running
    assert queued
    assert delayed
    engine.stop()
    assert queued.cancelled()
    assert delayed.cancelled()
    assert await engine.trigger("stopping", {"i": 3}) is None
    clock.advance(20)
    g.release.set()
    await asyncio.wait_for(engine, 5)
    assert running.future_state is FutureState.finished
    assert ids(g.started) == [0]


async def test_the_overrun_policy_decides_first(flow_engine: Engine, gate: tuple[Gate, str]) -> None:
    g, task = gate
    template = flow_template("skipping", task, concurrency=2)
    template.policy = template.policy.get("skip")
    await flow_engine.load(template)
    first = await flow_engine.trigger("skipping", {"i": 0})
    assert first is not None
    assert await flow_engine.trigger("skipping", {"i": 1}) is None  # skip: one runs
    g.release.set()
    await asyncio.wait_for(first, 5)


async def test_a_lane_follows_its_reloaded_template(flow_engine: Engine, gate: tuple[Gate, str]) -> None:
    g, task = gate
    await flow_engine.load(flow_template("reloaded", task, concurrency=1))
    workflows = [await flow_engine.trigger("reloaded", {"i": i}) for i in range(3)]
    await until(lambda: len(g.started) == 1)
    await flow_engine.load(flow_template("reloaded", task, concurrency=3, rate={"limit": 100, "period": 1}))
    workflows.append(await flow_engine.trigger("reloaded", {"i": 3}))
    await until(lambda: len(g.started) == 3)
    g.release.set()
    await asyncio.wait_for(asyncio.gather(*workflows), 5)  # type: ignore[arg-type]
