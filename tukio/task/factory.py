"""Creating tukio tasks: `new_task` and the loop's task factory."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

from tukio.task._start import start_task
from tukio.task.registry import TaskRegistry
from tukio.task.states import TaskExecState
from tukio.task.task import TukioTask
from tukio.task.template import TaskTemplate

__all__ = ["TaskExecState", "new_task", "start_task", "tukio_factory"]


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
    code = getattr(coro, "cr_code", None)
    registered, klass = TaskRegistry.holder_class(code) if code is not None else (False, None)
    if not registered:
        return asyncio.Task(coro, loop=loop, **kwargs)
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
