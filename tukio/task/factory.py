"""Creating tukio tasks: `new_task` and the loop's task factory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from tukio.task._start import context_for_child, start_task
from tukio.task.registry import TaskRegistry
from tukio.task.states import TaskExecState
from tukio.task.task import _OWN_CONTEXT, TukioTask
from tukio.task.template import TaskTemplate

__all__ = ["ChainedFactory", "TaskExecState", "install_factory", "new_task", "start_task", "tukio_factory"]

TaskFactory = Callable[..., "asyncio.Future[Any]"]


def new_task(
    task_name: str,
    *,
    data: Any = None,
    config: dict[str, Any] | None = None,
    timeout: float | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> TukioTask:
    """Create and schedule the task registered as `task_name`, outside any workflow.

    The coroutine is called with `data` as given (as in the original: a
    workflow passes an `Event`, so a task that reads ``event.data`` wants
    ``data=Event({...})`` here). The task gets a `TaskTemplate` made of
    `task_name`, `config` and `timeout`, so that
    ``asyncio.current_task().template.config`` works in a function task as
    ``self.config`` does in a holder.

    Args:
        task_name: the registered name.
        data: what the coroutine is called with. The task's `inputs` are a
            copy of it (an Event's data).
        config: the task's configuration, given to the holder class (if any)
            and kept in the task's template.
        timeout: seconds before the task ends as timed out (None: never).
        loop: the loop to run on (the running loop when None).

    Returns:
        The scheduled task.

    Raises:
        UnknownTaskName: nothing is registered as `task_name`.
        TypeError: the coroutine does not take exactly one data argument.
        Exception: whatever the holder's ``__init__`` raises.
    """
    template = TaskTemplate(task_name, config=config, timeout=timeout)
    return start_task(task_name, data, config=config, loop=loop, template=template)


def tukio_factory(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
    **kwargs: Any,
) -> asyncio.Task[Any]:
    """The asyncio task factory tukio installs on a loop.

    A coroutine of a registered task becomes a `TukioTask` (with its holder
    when it is a holder's method); anything else a plain `asyncio.Task`.
    Accepts the keyword arguments newer Pythons pass (name, context,
    eager_start).
    """
    return _create(loop, coro, kwargs, _plain_task)  # type: ignore[return-value]


def _plain_task(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
    return asyncio.Task(coro, loop=loop, **kwargs)


def _create(
    loop: asyncio.AbstractEventLoop, coro: Any, kwargs: dict[str, Any], other: TaskFactory
) -> asyncio.Future[Any]:
    """The task for `coro`: a `TukioTask` if it is registered, else what `other` makes of it.

    It is made in a context naming the workflow of the task creating it (see
    `context_for_child`), so `Workflow.current_workflow()` works in it.
    """
    context = context_for_child(loop, kwargs)
    if context is not None:
        if not _OWN_CONTEXT:  # 3.10: a task copies the context it is made in
            return context.run(_create, loop, coro, kwargs, other)
        kwargs["context"] = context
    task = _tukio_task(loop, coro, kwargs)
    return task if task is not None else other(loop, coro, **kwargs)


def _tukio_task(loop: asyncio.AbstractEventLoop, coro: Any, kwargs: dict[str, Any]) -> TukioTask | None:
    """A `TukioTask` for a registered coroutine, None for anything else."""
    code = getattr(coro, "cr_code", None)
    registered, klass = TaskRegistry.holder_class(code) if code is not None else (False, None)
    if not registered:
        return None
    holder = None
    if klass is not None:
        frame = getattr(coro, "cr_frame", None)
        holder = frame.f_locals.get("self") if frame is not None else None
    try:
        return TukioTask(coro, loop=loop, holder=holder, **kwargs)
    except BaseException:
        # The coroutine will never run: close it rather than leave a
        # "never awaited" warning behind the real error.
        coro.close()
        raise


class ChainedFactory:
    """`tukio_factory` in front of a task factory that was already installed.

    Registered coroutines become `TukioTask`s; every other coroutine goes to
    the factory that was there before (``asyncio.eager_task_factory``, a
    tracing factory...), so installing tukio takes nothing away.

    Args:
        inner: the factory installed before tukio's.
    """

    __slots__ = ("inner",)

    def __init__(self, inner: TaskFactory) -> None:
        self.inner = inner

    def __call__(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any], **kwargs: Any
    ) -> asyncio.Future[Any]:
        return _create(loop, coro, kwargs, self.inner)

    def __repr__(self) -> str:
        return f"ChainedFactory({self.inner!r})"


def install_factory(loop: asyncio.AbstractEventLoop) -> None:
    """Install tukio's task factory on `loop`, keeping one already there.

    Without a factory, `tukio_factory` is installed; with another one, a
    `ChainedFactory` wrapping it. Installing twice changes nothing.
    """
    current = loop.get_task_factory()
    if current is tukio_factory or isinstance(current, ChainedFactory):
        return
    loop.set_task_factory(tukio_factory if current is None else ChainedFactory(current))
