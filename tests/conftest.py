"""Shared fixtures: task registration that cleans up, fresh engines, loops."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tukio import Engine, TaskRegistry, register

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dev dependency
    uvloop = None

_names = itertools.count()


@pytest.fixture
def task_name() -> Callable[[str], str]:
    """Return a maker of task names unique to the whole test session."""
    return lambda prefix="task": f"{prefix}-{next(_names)}"


@pytest.fixture
def registered() -> Iterator[Callable[..., Any]]:
    """``registered(name, obj, coro_name=None)`` registers and unregisters after the test."""
    names: list[str] = []

    def do(name: str, obj: Any, coro_name: str | None = None) -> Any:
        register(name, coro_name)(obj)
        names.append(name)
        return obj

    yield do
    for name in names:
        if TaskRegistry.registered(name):
            TaskRegistry.unregister(name)


@pytest.fixture
def noop(registered: Callable[..., Any], task_name: Callable[[str], str]) -> str:
    """The name of a registered task that does nothing."""

    async def noop_task(event: Any) -> None:
        return None

    name = task_name("noop")
    registered(name, noop_task)
    return name


@pytest.fixture
async def engine() -> Any:
    """A fresh engine on the test's loop, force-stopped after the test."""
    eng = Engine()
    yield eng
    await asyncio.wait_for(eng.stop(force=True), 5)


# The execution tests run on both loops; the rest on asyncio's only.
UVLOOP_MODULES = frozenset({"test_engine", "test_workflow", "test_join", "test_rescue", "test_retry"})


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Run async tests on asyncio's loop, and the execution tests on uvloop too."""
    factories: dict[str, Callable[[], Any]] = {"asyncio": asyncio.new_event_loop}
    module = getattr(item, "module", None)
    if uvloop is not None and module is not None and module.__name__ in UVLOOP_MODULES:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """(dsn, schema): a PostgreSQL schema of the test's own, dropped after it (skips without PostgreSQL)."""
    from pg import fresh_schema

    yield from fresh_schema()
