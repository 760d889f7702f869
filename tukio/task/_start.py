"""`start_task`: create a registered task bound to its template and workflow."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tukio._loop import resolve_loop
from tukio.task.registry import TaskRegistry
from tukio.task.task import TukioTask

if TYPE_CHECKING:
    from tukio.task.template import TaskTemplate
    from tukio.workflow.workflow import Workflow

__all__ = ["start_task"]


def start_task(
    task_name: str,
    data: Any,
    *,
    config: dict[str, Any] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    template: TaskTemplate | None = None,
    workflow: Workflow | None = None,
) -> TukioTask:
    """Create the task, bind it to its template and workflow, emit 'task-begin'.

    The template's timeout and topics apply. See `new_task` for what it raises.
    """
    klass, coro_fn = TaskRegistry.get(task_name)
    loop = resolve_loop(loop)
    if klass is None:
        holder = None
        coro = coro_fn(data)
    else:
        holder = klass(config)
        coro = coro_fn(holder, data)
    try:
        task = TukioTask(coro, loop=loop, holder=holder)
    except BaseException:
        coro.close()
        raise
    task.started(data, template, workflow)
    return task
