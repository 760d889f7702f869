"""Tukio's task factory next to one already installed, and eager start (3.12+)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import pytest
from support import template

import tukio.task._start as start_module
from tukio import Engine, Event, TukioTask
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
async def test_eager_start_runs_the_first_step_inside_the_trigger(probe: tuple[str, list[str]]) -> None:
    name, seen = probe
    engine = Engine(eager_start=True)
    await engine.load(template([("a", name), ("b", name)], {"a": ["b"]}, id="eager"))
    wf = await engine.trigger("eager", {"x": 1})
    assert wf is not None
    assert seen == ["ran"]  # the visible difference: 'a' ran before trigger() returned
    await asyncio.wait_for(wf, 5)
    assert seen == ["ran", "ran"]
    assert wf.tasks_by_id["b"].inputs == {"x": 1}
    assert [t.future_state.value for t in wf.tasks] == ["finished", "finished"]
    await engine.stop()


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
