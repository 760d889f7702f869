"""The registry of task names and the `register` decorator."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from types import CodeType
from typing import Any, TypeVar

from tukio.errors import UnknownTaskName

__all__ = ["TaskRegistry", "UnknownTaskName", "register", "registry_entry"]

CoroFunction = Callable[..., Coroutine[Any, Any, Any]]
Entry = tuple[type | None, CoroFunction]
T = TypeVar("T")


class TaskRegistry:
    """Process-wide mapping of task names to coroutine functions or holders."""

    _entries: dict[str, Entry] = {}  # noqa: RUF012 - registry shared by design
    # code object of a registered coroutine -> its holder class (or None),
    # so the task factory recognises tukio coroutines in O(1).
    _codes: dict[CodeType, type | None] = {}  # noqa: RUF012

    @classmethod
    def register(cls, coro_or_cls: Any, task_name: str, coro_name: str | None = None) -> None:
        """Register a coroutine function, or a holder class's coroutine `coro_name`, as `task_name`.

        The original's signature; the `register` decorator calls it. A failed
        registration registers nothing.

        Raises:
            TypeError: `task_name` is not a non-empty string, the object is not
                a coroutine function, or a class is given without `coro_name`.
            ValueError: `task_name` is already registered.
            AttributeError: the class has no attribute named `coro_name`.
        """
        if not isinstance(task_name, str) or not task_name:
            raise TypeError(f"task name must be a non-empty string, not {task_name!r}")
        if task_name in cls._entries:
            raise ValueError(f"task name {task_name!r} is already registered")
        klass: type | None = None
        coro_fn = coro_or_cls
        if inspect.isclass(coro_or_cls):
            klass = coro_or_cls
            if coro_name is None:
                raise TypeError(f"registering class {klass.__qualname__} as {task_name!r} needs coro_name")
            try:
                coro_fn = getattr(klass, coro_name)
            except AttributeError:
                raise AttributeError(
                    f"{klass.__qualname__} has no method {coro_name!r} to register as {task_name!r}"
                ) from None
        if not inspect.iscoroutinefunction(coro_fn):
            raise TypeError(f"{getattr(coro_fn, '__qualname__', coro_fn)!r} is not a coroutine function")
        cls._entries[task_name] = (klass, coro_fn)
        code = getattr(inspect.unwrap(coro_fn), "__code__", None)
        if code is not None:
            cls._codes[code] = klass

    @classmethod
    def codes(cls) -> dict[CodeType, str]:
        """Return the code object of each registered coroutine → its task name (a new dict)."""
        out: dict[CodeType, str] = {}
        for name, (_, coro_fn) in cls._entries.items():
            code = getattr(inspect.unwrap(coro_fn), "__code__", None)
            if code is not None:
                out.setdefault(code, name)
        return out

    @classmethod
    def get(cls, task_name: str) -> Entry:
        """Return ``(holder_class_or_None, coroutine_function)`` for `task_name`.

        Raises:
            UnknownTaskName: nothing is registered under that name.
        """
        try:
            return cls._entries[task_name]
        except (KeyError, TypeError):
            raise UnknownTaskName(f"unknown task name {task_name!r}") from None

    @classmethod
    def registered(cls, task_name: str) -> bool:
        """Return True when `task_name` is registered."""
        return task_name in cls._entries

    @classmethod
    def all(cls) -> dict[str, Entry]:
        """Return a copy of the name → entry mapping."""
        return dict(cls._entries)

    @classmethod
    def unregister(cls, task_name: str) -> Entry:
        """Remove `task_name` and return its entry.

        Raises:
            UnknownTaskName: nothing is registered under that name.
        """
        entry = cls.get(task_name)
        del cls._entries[task_name]
        if not any(fn is entry[1] for _, fn in cls._entries.values()):
            code = getattr(inspect.unwrap(entry[1]), "__code__", None)
            cls._codes.pop(code, None)  # type: ignore[arg-type]
        return entry

    @classmethod
    def holder_class(cls, code: CodeType) -> tuple[bool, type | None]:
        """Tell whether `code` belongs to a registered coroutine, and its holder class."""
        try:
            return True, cls._codes[code]
        except KeyError:
            return False, None


def register(task_name: str, coro_name: str | None = None) -> Callable[[T], T]:
    """Register a coroutine function, or a task holder class, as `task_name`.

    For a class, `coro_name` names the coroutine method to run; the class gets
    a `TASK_NAME` attribute. A failed registration registers nothing.

    Raises:
        ValueError: `task_name` is already registered.
        TypeError: the object is not a coroutine function, or a class is
            given without `coro_name`.
        AttributeError: the class has no attribute named `coro_name`.
    """

    def decorator(obj: T) -> T:
        TaskRegistry.register(obj, task_name, coro_name)
        if inspect.isclass(obj):
            obj.TASK_NAME = task_name  # type: ignore[attr-defined]
        return obj

    return decorator


#: ``registry_entry(name)``: the entry of `name`, or None (the registry's own
#: mapping, read without a call more: the path of every workflow task).
registry_entry: Callable[[str], Entry | None] = TaskRegistry._entries.get
