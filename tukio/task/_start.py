"""`start_task`: create a registered task bound to its template and workflow."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tukio._loop import resolve_loop
from tukio.task.registry import TaskRegistry, registry_entry
from tukio.task.task import TukioTask, bound_task

if TYPE_CHECKING:
    from tukio.task.template import TaskTemplate
    from tukio.workflow.workflow import Workflow

__all__ = [
    "EAGER_DEPTH",
    "EAGER_SUPPORTED",
    "context_for_child",
    "creating",
    "creating_for",
    "end_now",
    "start_bound",
    "start_task",
]

#: True where asyncio can start a task eagerly (Python 3.12+).
EAGER_SUPPORTED = sys.version_info >= (3, 12)
#: How many eager starts may nest (a task starting, inside its first step, a
#: workflow whose task does the same; a task ending in its first step, whose
#: successor does the same...); deeper ones start on the next turn.
EAGER_DEPTH = 16


class _ThreadState(threading.local):
    """What a start in progress tells the code it runs, per thread (each loop runs in its own).

    A module global would be shared by loops running in other threads: one
    thread could then see, or leave behind, another's workflow.
    """

    #: How deep eager starts nest right now (see `EAGER_DEPTH`).
    eager_depth = 0
    #: The workflow whose task's holder is being made (see `creating`).
    creating: Workflow | None = None


_state = _ThreadState()

#: In the context of a task a workflow task creates: that workflow (see `context_for_child`).
creating_for: contextvars.ContextVar[Workflow | None] = contextvars.ContextVar("tukio_creating_for", default=None)


def start_task(
    task_name: str,
    data: Any,
    *,
    config: dict[str, Any] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    template: TaskTemplate | None = None,
    workflow: Workflow | None = None,
    eager: bool = False,
) -> TukioTask:
    """Create the task, bind it to its template and workflow, emit 'task-begin'.

    The template's timeout and topics apply. With `eager` (Python 3.12+),
    the task runs its first step now (see `Engine`'s ``eager_start``). See
    `new_task` for what it raises.
    """
    if loop is None:
        loop = resolve_loop(loop)
    return start_bound(task_name, data, config, loop, template, workflow, eager, None)


def start_bound(
    task_name: str,
    data: Any,
    config: dict[str, Any] | None,
    loop: asyncio.AbstractEventLoop,
    template: TaskTemplate | None,
    workflow: Workflow | None,
    eager: bool,
    ended: Callable[[TukioTask], Any] | None,
) -> TukioTask:
    """`start_task` with positional arguments: the path of a workflow's tasks.

    `ended` is the task's `on_ended` callback, set before the task can end
    (not for an eager start: its caller handles an end in the first step).
    """
    # The registry's mapping read directly: a workflow starts one task per
    # edge, and `TaskRegistry.get` is a call more (it raises for us when absent).
    entry = registry_entry(task_name)
    klass, coro_fn = entry if entry is not None else TaskRegistry.get(task_name)
    # No context variable is set here (that would cost two objects the GC
    # tracks per workflow): a task knows its workflow, a holder's __init__
    # finds it in `creating()` (it runs now, synchronously), and a plain task a
    # workflow task creates gets it in its context from the task factory.
    if klass is None:
        holder = None
        coro = coro_fn(data)
    else:
        state = _state
        previous, state.creating = state.creating, workflow
        try:
            holder = klass(config)
        finally:
            state.creating = previous
        coro = coro_fn(holder, data)
    if not eager:  # (bound_task closes `coro` if the task cannot be made)
        return bound_task(coro, data, template, workflow, loop, holder, False, ended)
    state = _state
    eager = EAGER_SUPPORTED and state.eager_depth < EAGER_DEPTH
    if eager:
        state.eager_depth += 1
    try:
        return bound_task(coro, data, template, workflow, loop, holder, eager, ended)
    finally:
        if eager:
            state.eager_depth -= 1


def creating() -> Workflow | None:
    """The workflow whose task's holder is being made right now in this thread, or None."""
    return _state.creating


def context_for_child(loop: asyncio.AbstractEventLoop, kwargs: dict[str, Any]) -> contextvars.Context | None:
    """The context a task created now must run in so that `Workflow.current_workflow()` names its workflow.

    That is the workflow of the task creating it (or of the holder being
    made), set in a copy of the current context; None when the usual copy
    will do (no such workflow, the context already names it, or the caller
    gave its own context).
    """
    if kwargs.get("context") is not None:
        return None
    workflow = _state.creating
    if workflow is None:
        workflow = getattr(asyncio.current_task(loop), "workflow", None)
    if workflow is None or creating_for.get() is workflow:
        return None
    context = contextvars.copy_context()
    context.run(creating_for.set, workflow)
    return context


def end_now(task: TukioTask, callback: Callable[[TukioTask], Any]) -> bool:
    """Call `callback(task)` now for a task that ended in its eager first step.

    Its end is handled in the call that started it, as it would have been
    in its last step: in its context, its successors starting eagerly in
    turn. Each such end counts as one level of eager nesting; past
    `EAGER_DEPTH`, nothing is called and False is returned (the caller
    hands the end to the next turn, see `TukioTask.on_ended`).

    It never raises: as at the end of a task's last step, a failure is the
    loop's to report.
    """
    state = _state
    if state.eager_depth >= EAGER_DEPTH:
        return False
    state.eager_depth += 1
    try:
        task.get_context().run(callback, task)  # type: ignore[attr-defined]
    except Exception as error:
        task.get_loop().call_exception_handler({"message": f"{task!r}: handling its end failed", "exception": error})
    finally:
        state.eager_depth -= 1
    return True
