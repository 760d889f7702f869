"""Tukio's task factory next to one already installed, and eager start (3.12+)."""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Callable
from typing import Any

import pytest
from support import Recorder, template

import tukio.task._start as start_module
from tukio import Engine, Event, TukioTask, Workflow
from tukio.store import MemoryStore
from tukio.task.factory import ChainedFactory, install_factory, tukio_factory

needs_eager = pytest.mark.skipif(sys.version_info < (3, 12), reason="eager task start is Python 3.12+")


@pytest.fixture
def probe(registered: Callable[..., Any], task_name: Callable[[str], str]) -> tuple[str, list[str]]:
    """A task that notes 'ran' when its code runs."""
    seen: list[str] = []

    async def probe_task(event: Event) -> None:
        seen.append("ran")

    name = task_name("probe")
    registered(name, probe_task)
    return name, seen


async def test_an_installed_factory_is_wrapped_not_replaced(probe: tuple[str, list[str]]) -> None:
    loop = asyncio.get_running_loop()
    made: list[Any] = []

    def tracing(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    previous = loop.get_task_factory()
    loop.set_task_factory(tracing)
    try:
        engine = Engine()
        factory = loop.get_task_factory()
        assert isinstance(factory, ChainedFactory)
        assert factory.inner is tracing
        install_factory(loop)  # a second engine does not wrap twice
        assert loop.get_task_factory() is factory

        async def plain() -> str:
            return "plain"

        assert await loop.create_task(plain()) == "plain"
        assert len(made) == 1  # plain coroutines still go through the tracing factory
        name, seen = probe
        wf = await engine.run_once(template([("a", name)], {}), {})
        assert wf is not None
        await asyncio.wait_for(wf, 5)
        assert seen == ["ran"]
        assert isinstance(wf.tasks_by_id["a"], TukioTask)
        await engine.stop()
    finally:
        loop.set_task_factory(previous)


async def test_without_a_factory_tukio_installs_its_own() -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    loop.set_task_factory(None)
    try:
        install_factory(loop)
        assert loop.get_task_factory() is tukio_factory
    finally:
        loop.set_task_factory(previous)


@needs_eager
async def test_eager_task_factory_keeps_working_beside_tukio(probe: tuple[str, list[str]]) -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    try:
        engine = Engine()
        ran: list[str] = []

        async def eager() -> None:
            ran.append("eager")

        task = loop.create_task(eager())
        assert ran == ["eager"]  # ran inside create_task: the eager factory is still in charge
        await task
        name, seen = probe
        wf = await engine.run_once(template([("a", name)], {}), {})
        assert wf is not None
        await asyncio.wait_for(wf, 5)
        assert seen == ["ran"]
        await engine.stop()
    finally:
        loop.set_task_factory(previous)


@needs_eager
async def test_eager_start_runs_the_workflow_inside_the_trigger(probe: tuple[str, list[str]]) -> None:
    name, seen = probe
    engine = Engine(eager_start=True)
    await engine.load(template([("a", name), ("b", name), ("c", name)], {"a": ["b"], "b": ["c"]}, id="eager"))
    wf = await engine.trigger("eager", {"x": 1})
    assert wf is not None
    # The visible difference: no task waits, so the whole chain ran, and the
    # workflow ended, before trigger() returned.
    assert seen == ["ran", "ran", "ran"]
    assert wf.done()
    assert wf.tasks_by_id["c"].inputs == {"x": 1}
    assert [t.future_state.value for t in wf.tasks] == ["finished"] * 3
    assert wf.report()["exec"]["state"] == "finished"
    assert engine.instances == []
    assert engine.running("eager") == []
    await asyncio.wait_for(engine.stop(), 5)


@needs_eager
async def test_eager_start_a_one_task_workflow_is_done_when_data_received_returns(
    probe: tuple[str, list[str]],
) -> None:
    name, seen = probe
    engine = Engine(eager_start=True)
    await engine.load(template([("a", name)], {}, id="one", topics=["t"]))
    [wf] = await engine.data_received({"x": 1}, topic="t")  # type: ignore[misc]
    assert wf.done()
    assert seen == ["ran"]
    assert wf.result() == set(wf.tasks)
    assert engine.instances == []
    await asyncio.wait_for(engine.stop(), 5)
    assert engine.done()


@needs_eager
async def test_eager_start_stops_at_the_first_real_wait(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    gate = asyncio.Event()
    seen: list[str] = []

    async def waits(event: Event) -> None:
        seen.append("before")
        await gate.wait()
        seen.append("after")

    async def quick(event: Event) -> None:
        seen.append("quick")

    slow, fast = task_name("waits"), task_name("quick")
    registered(slow, waits)
    registered(fast, quick)
    engine = Engine(eager_start=True)
    await engine.load(template([("a", fast), ("b", slow), ("c", fast)], {"a": ["b"], "b": ["c"]}, id="waits"))
    wf = await engine.trigger("waits", {})
    assert wf is not None
    assert seen == ["quick", "before"]
    assert not wf.done()
    assert engine.instances == [wf]
    gate.set()
    await asyncio.wait_for(wf, 5)
    assert seen == ["quick", "before", "after", "quick"]
    await asyncio.wait_for(engine.stop(), 5)


@needs_eager
async def test_eager_start_a_long_chain_is_bounded_and_completes(
    probe: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, seen = probe
    monkeypatch.setattr(start_module, "EAGER_DEPTH", 3)
    size = 10
    ids = [f"t{i}" for i in range(size)]
    tmpl = template([(i, name) for i in ids], {a: [b] for a, b in itertools.pairwise(ids)}, id="long")
    engine = Engine(eager_start=True)
    await engine.load(tmpl)
    wf = await engine.trigger("long", {})
    assert wf is not None
    assert seen == ["ran"] * 3  # the 4th task starts on the next turn of the loop
    assert not wf.done()
    await asyncio.wait_for(wf, 5)
    assert seen == ["ran"] * size
    assert all(t.future_state.value == "finished" for t in wf.tasks)
    await asyncio.wait_for(engine.stop(), 5)


@needs_eager
async def test_eager_start_a_chain_far_longer_than_the_bound_raises_no_recursion_error(
    probe: tuple[str, list[str]],
) -> None:
    name, seen = probe
    size = start_module.EAGER_DEPTH * 20
    ids = [f"t{i}" for i in range(size)]
    engine = Engine(eager_start=True)
    await engine.load(template([(i, name) for i in ids], {a: [b] for a, b in itertools.pairwise(ids)}, id="longer"))
    wf = await engine.trigger("longer", {"n": 1})
    assert wf is not None
    assert len(seen) == start_module.EAGER_DEPTH
    await asyncio.wait_for(wf, 5)
    assert len(seen) == size
    assert wf.tasks_by_id[ids[-1]].inputs == {"n": 1}
    await asyncio.wait_for(engine.stop(), 5)


@needs_eager
async def test_eager_start_keeps_the_order_of_execution_events(probe: tuple[str, list[str]]) -> None:
    name, _ = probe
    tmpl = template([("a", name), ("b", name)], {"a": ["b"]}, id="ordered")
    kinds = []
    for eager in (False, True):
        engine = Engine(eager_start=eager)
        await engine.load(tmpl)
        events = Recorder()
        try:
            wf = await engine.trigger("ordered", {})
            assert wf is not None
            await asyncio.wait_for(wf, 5)
            await asyncio.sleep(0)  # the broker calls a plain handler on the next turn
        finally:
            events.close()
        await asyncio.wait_for(engine.stop(), 5)
        kinds.append([(e.data["type"], e.source.task_template_id) for e in events.events])  # type: ignore[union-attr]
    assert (
        kinds[0]
        == kinds[1]
        == [
            ("workflow-begin", None),
            ("task-begin", "a"),
            ("task-end", "a"),
            ("task-begin", "b"),
            ("task-end", "b"),
            ("workflow-end", None),
        ]
    )


@needs_eager
async def test_eager_start_skip_until_unlock_bookkeeping(probe: tuple[str, list[str]]) -> None:
    name, seen = probe
    engine = Engine(eager_start=True)
    await engine.load(template([("a", name)], {}, id="once", policy="skip-until-unlock"))
    first = await engine.trigger("once", {})
    assert first is not None
    assert first.done()
    assert not first.locked()
    assert engine.running("once") == []
    second = await engine.trigger("once", {})  # not skipped: the first one has unlocked (it ended)
    assert second is not None
    assert second.done()
    assert seen == ["ran", "ran"]
    await asyncio.wait_for(engine.stop(), 5)
    assert engine.done()


@needs_eager
async def test_eager_start_an_error_in_the_first_step_is_the_tasks_outcome(
    registered: Callable[..., Any], task_name: Callable[[str], str], probe: tuple[str, list[str]]
) -> None:
    async def fails(event: Event) -> None:
        raise ValueError("at once")

    bad = task_name("fails")
    registered(bad, fails)
    name, seen = probe
    engine = Engine(eager_start=True)
    await engine.load(template([("a", bad), ("b", name)], {"a": ["b"]}, id="fails"))
    wf = await engine.trigger("fails", {})
    assert wf is not None
    assert wf.done()
    assert wf.tasks_by_id["a"].future_state.value == "exception"
    assert isinstance(wf.tasks_by_id["a"].error, ValueError)
    assert "b" not in wf.tasks_by_id
    assert seen == []
    await asyncio.wait_for(engine.stop(), 5)


@needs_eager
async def test_eager_start_with_a_store_still_writes_ahead(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    store = MemoryStore()
    recorded: list[Any] = []

    async def look(event: Event) -> None:
        wf = Workflow.current_workflow()
        assert wf is not None
        report = store.load(wf.uid)  # the trigger is in the store before the root runs
        recorded.append({t["id"]: (t["exec"] or {}).get("state") for t in report["tasks"]})

    name = task_name("look")
    registered(name, look)
    engine = Engine(store=store, eager_start=True)
    await engine.load(template([("a", name), ("b", name)], {"a": ["b"]}, id="durable"))
    wf = await engine.trigger("durable", {})
    assert wf is not None
    await asyncio.wait_for(wf, 5)
    await asyncio.wait_for(engine.stop(), 5)
    # 'b' ran once the end of 'a' was in the store.
    assert recorded[1]["a"] == "finished"
    assert store.load(wf.uid)["exec"]["state"] == "finished"


@needs_eager
async def test_eager_start_nesting_is_bounded(
    registered: Callable[..., Any], task_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(start_module, "EAGER_DEPTH", 3)
    engine = Engine(eager_start=True)
    depth: list[int] = []
    deepest = asyncio.Event()

    async def nest(event: Event) -> None:
        level = event.data["level"]
        depth.append(level)
        if level < 6:
            await engine.run_once(tmpl, {"level": level + 1})
        else:
            deepest.set()

    name = task_name("nest")
    registered(name, nest)
    tmpl = template([("a", name)], {}, id="nest")
    wf = await engine.run_once(tmpl, {"level": 1})
    assert depth == [1, 2, 3]  # the 4th level starts on the next turn of the loop
    assert wf is not None
    await asyncio.wait_for(deepest.wait(), 5)
    await asyncio.wait_for(engine.stop(), 5)
    assert depth == [1, 2, 3, 4, 5, 6]


def test_eager_start_is_ignored_before_3_12() -> None:
    if start_module.EAGER_SUPPORTED:
        assert sys.version_info >= (3, 12)
    else:
        assert sys.version_info < (3, 12)


@needs_eager
async def test_end_now_reports_a_failing_callback_and_respects_the_bound(
    probe: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, _ = probe
    loop = asyncio.get_running_loop()
    wf = Workflow(template([("a", name)], {}), eager_start=True)
    wf.run({})
    assert wf.done()
    task = wf.tasks_by_id["a"]
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:

        def boom(_: TukioTask) -> None:
            raise RuntimeError("boom")

        assert start_module.end_now(task, boom)
        assert [str(c["exception"]) for c in reported] == ["boom"]
        monkeypatch.setattr(start_module, "EAGER_DEPTH", 0)
        assert not start_module.end_now(task, boom)  # past the bound: the caller defers it
        assert len(reported) == 1
    finally:
        loop.set_exception_handler(None)
