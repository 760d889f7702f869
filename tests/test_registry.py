"""Task registration: functions, holder classes, errors, lookups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tukio import TaskRegistry, UnknownTaskName
from tukio.errors import TemplateError, TukioError
from tukio.task import TaskHolder, register
from tukio.task import TaskRegistry as TaskRegistryFromTask
from tukio.task import UnknownTaskName as UnknownTaskNameFromTask

Registered = Callable[..., Any]
Names = Callable[[str], str]


def test_register_a_coroutine_function(registered: Registered, task_name: Names) -> None:
    async def work(data: Any) -> Any:
        return data

    name = task_name("fn")
    assert registered(name, work) is work
    assert TaskRegistry.registered(name)
    assert TaskRegistry.get(name) == (None, work)
    assert TaskRegistry.all()[name] == (None, work)
    assert not hasattr(work, "TASK_NAME")


def test_coro_name_is_ignored_for_functions(registered: Registered, task_name: Names) -> None:
    async def work(data: Any) -> Any:
        return data

    name = task_name("fn")
    registered(name, work, "ignored")
    assert TaskRegistry.get(name) == (None, work)


def test_register_as_a_decorator(task_name: Names) -> None:
    name = task_name("decorated")

    @register(name)
    async def work(data: Any) -> Any:
        return data

    try:
        assert TaskRegistry.get(name) == (None, work)
    finally:
        TaskRegistry.unregister(name)
    assert not TaskRegistry.registered(name)


def test_register_a_holder_class(registered: Registered, task_name: Names) -> None:
    class Holder(TaskHolder):
        async def execute(self, data: Any) -> Any:
            return data

    name = task_name("holder")
    assert registered(name, Holder, "execute") is Holder
    assert name == Holder.TASK_NAME  # type: ignore[attr-defined]
    klass, coro_fn = TaskRegistry.get(name)
    assert klass is Holder
    assert coro_fn is Holder.execute


def test_any_class_taking_a_config_can_be_a_holder(registered: Registered, task_name: Names) -> None:
    class Plain:
        def __init__(self, config: Any) -> None:
            self.config = config

        async def run(self, data: Any) -> Any:
            return data

    name = task_name("plain-holder")
    registered(name, Plain, "run")
    assert TaskRegistry.get(name) == (Plain, Plain.run)
    assert name == Plain.TASK_NAME  # type: ignore[attr-defined]


def test_a_name_is_registered_once(registered: Registered, task_name: Names) -> None:
    async def first(data: Any) -> Any:
        return 1

    async def second(data: Any) -> Any:
        return 2

    class Holder(TaskHolder):
        async def run(self, data: Any) -> Any:
            return 3

    name = task_name("once")
    registered(name, first)
    with pytest.raises(ValueError, match=f"task name '{name}' is already registered"):
        register(name)(second)
    with pytest.raises(ValueError, match="already registered"):
        register(name, "run")(Holder)
    assert TaskRegistry.get(name) == (None, first)
    assert not hasattr(Holder, "TASK_NAME")


@pytest.mark.parametrize("obj", [lambda data: data, print, 42, None])
def test_not_a_coroutine_function(obj: Any, task_name: Names) -> None:
    name = task_name("not-coro")
    with pytest.raises(TypeError, match="not a coroutine function"):
        register(name)(obj)
    assert not TaskRegistry.registered(name)


def test_a_plain_function_is_not_a_coroutine_function(task_name: Names) -> None:
    def work(data: Any) -> Any:
        return data

    name = task_name("sync")
    with pytest.raises(TypeError, match=r"'.*work' is not a coroutine function"):
        register(name)(work)
    assert not TaskRegistry.registered(name)


def test_a_class_without_coro_name(task_name: Names) -> None:
    class Holder(TaskHolder):
        async def run(self, data: Any) -> Any:
            return data

    name = task_name("no-coro-name")
    with pytest.raises(TypeError, match="needs coro_name"):
        register(name)(Holder)
    assert not TaskRegistry.registered(name)
    assert not hasattr(Holder, "TASK_NAME")


def test_a_class_missing_its_method(task_name: Names) -> None:
    class Holder(TaskHolder):
        async def run(self, data: Any) -> Any:
            return data

    name = task_name("missing-method")
    with pytest.raises(AttributeError, match="has no method 'execute'"):
        register(name, "execute")(Holder)
    assert not TaskRegistry.registered(name)
    assert not hasattr(Holder, "TASK_NAME")


def test_a_class_whose_method_is_not_a_coroutine(task_name: Names) -> None:
    class Holder(TaskHolder):
        def run(self, data: Any) -> Any:
            return data

    name = task_name("sync-method")
    with pytest.raises(TypeError, match="not a coroutine function"):
        register(name, "run")(Holder)
    assert not TaskRegistry.registered(name)
    assert not hasattr(Holder, "TASK_NAME")


@pytest.mark.parametrize("name", ["", None, 3])
def test_a_task_name_must_be_a_non_empty_string(name: Any) -> None:
    async def work(data: Any) -> Any:
        return data

    before = TaskRegistry.all()
    with pytest.raises(TypeError, match="task name must be a non-empty string"):
        register(name)(work)
    assert TaskRegistry.all() == before


def test_get_unknown_name(task_name: Names) -> None:
    name = task_name("unknown")
    with pytest.raises(UnknownTaskName, match=f"unknown task name '{name}'") as info:
        TaskRegistry.get(name)
    # It stays catchable as the KeyError it always was.
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, TukioError)
    assert isinstance(info.value, TemplateError)
    with pytest.raises(UnknownTaskName):
        TaskRegistry.get(["not", "hashable"])  # type: ignore[arg-type]


def test_all_is_a_copy(registered: Registered, task_name: Names) -> None:
    async def work(data: Any) -> Any:
        return data

    name = task_name("all")
    registered(name, work)
    entries = TaskRegistry.all()
    assert entries[name] == (None, work)
    entries.clear()
    assert TaskRegistry.registered(name)
    assert name in TaskRegistry.all()


def test_unregister(task_name: Names) -> None:
    async def work(data: Any) -> Any:
        return data

    name = task_name("unregister")
    register(name)(work)
    assert TaskRegistry.unregister(name) == (None, work)
    assert not TaskRegistry.registered(name)
    assert name not in TaskRegistry.all()
    with pytest.raises(UnknownTaskName, match=name):
        TaskRegistry.get(name)
    with pytest.raises(UnknownTaskName, match=name):
        TaskRegistry.unregister(name)
    # The name is free again.
    register(name)(work)
    assert TaskRegistry.unregister(name) == (None, work)


def test_same_coroutine_under_two_names(registered: Registered, task_name: Names) -> None:
    async def work(data: Any) -> Any:
        return data

    first, second = task_name("twice"), task_name("twice")
    registered(first, work)
    registered(second, work)
    TaskRegistry.unregister(first)
    assert TaskRegistry.get(second) == (None, work)


def test_import_paths() -> None:
    assert TaskRegistryFromTask is TaskRegistry
    assert UnknownTaskNameFromTask is UnknownTaskName
