"""Steering a running workflow: cancel, time out, suspend, resume, and the choices its tasks make."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from tukio.task.task import TukioTask
from tukio.workflow._lifecycle import State
from tukio.workflow.states import WorkflowExecState

if TYPE_CHECKING:
    from tukio.task.states import TaskExecState
    from tukio.task.template import TaskTemplate
    from tukio.utils import TimeoutHandle
    from tukio.workflow.template import Plan

__all__ = ["Control"]

log = logging.getLogger("tukio.workflow.workflow")


class Control:
    """The control methods of a `Workflow` (a mixin: the workflow holds the state)."""

    if not TYPE_CHECKING:
        # No slots of its own: `Workflow` declares them all (mypy would check
        # this mixin's assignments against an empty tuple).
        __slots__ = ()

    # Set by Workflow.
    tasks_by_id: dict[str, TukioTask]
    _uid: str
    _life: State
    _open: int
    _plan: Plan
    _timeout: TimeoutHandle | None
    _unlock_task: TukioTask | None
    _next: dict[str, tuple[str, ...]] | None
    _suspended: dict[str, TukioTask] | None
    _deferred: list[TukioTask] | None

    if TYPE_CHECKING:

        def done(self) -> bool: ...
        def _move(self, new: State) -> None: ...
        def _drop_retries(self) -> list[TukioTask]: ...
        def _finish(self) -> None: ...
        def _start_task(self, template: TaskTemplate, data: Any) -> TukioTask | None: ...
        def _flow(self, task: TukioTask) -> None: ...
        def _close(self) -> None: ...
        def _release_lock(self) -> None: ...
        def _emit(self, kind: WorkflowExecState | TaskExecState, content: Any, task_id: str | None = None) -> None: ...

    # -- control ---------------------------------------------------------------
    def cancel(self, msg: Any = None) -> bool:
        """Cancel every pending task; the workflow ends 'cancelled' once they are done.

        Returns False if the workflow had already ended.
        """
        return self._halt(State.CANCELLING)

    def timeout(self) -> bool:
        """End the workflow as timed out (its tasks end 'cancelled').

        Returns False if the workflow had already ended.
        """
        return self._halt(State.TIMING_OUT)

    def _halt(self, state: State) -> bool:
        if self.done():
            return False
        if self._life is state or self._life is State.TIMING_OUT:
            return True
        self._move(state)
        if self._timeout is not None:
            self._timeout.cancel()
        self._drop_retries()
        self._suspended = self._deferred = None
        for task in self.tasks_by_id.values():
            if not task.done():
                task.cancel()
        if self._open == 0:
            self._finish()
        return True

    def suspend(self) -> bool:
        """Stop starting tasks and cancel the running ones, marked 'suspended'.

        Returns False when the workflow is not running.
        """
        if self._life is not State.RUNNING:
            return False
        self._move(State.SUSPENDED)
        self._suspended = {}
        for task in self._drop_retries():
            self._suspended[task.template.uid] = task  # type: ignore[union-attr]
        for task in list(self.tasks_by_id.values()):
            task.suspend()
        self._emit(WorkflowExecState.suspend, None)
        log.info("[%s] workflow suspended", self._uid)
        return True

    def resume(self) -> bool:
        """Restart the suspended tasks with their inputs and let the flow go on.

        Returns False when the workflow is not suspended.
        """
        if self._life is not State.SUSPENDED:
            return False
        self._move(State.RUNNING)
        suspended, deferred = self._suspended or {}, self._deferred or []
        self._suspended = self._deferred = None
        self._emit(WorkflowExecState.resume, None)
        log.info("[%s] workflow resumed", self._uid)
        self._open += 1  # nothing ends the workflow while it restarts its tasks
        for task in suspended.values():
            self._start_task(task.template, task.argument)  # type: ignore[arg-type]
        for task in deferred:
            self._flow(task)
        self._close()
        return True

    def set_next_tasks(self, task_ids: list[str]) -> None:
        """Choose which successors of the running task start when it ends.

        As in the original, ids that are not successors of the calling task
        are ignored (and logged at warning level); an empty list starts none.

        Raises:
            RuntimeError: not called from a task this workflow runs.
        """
        tid = self._calling_task().template.uid  # type: ignore[union-attr]
        allowed = self._plan.successors[tid]
        chosen = []
        for i in task_ids:
            if i in allowed:
                chosen.append(i)
            else:
                log.warning("[%s] task %s: %r is not one of its successors %s, ignored", self._uid, tid, i, [*allowed])
        if self._next is None:
            self._next = {}
        self._next[tid] = tuple(chosen)

    def unlock_when_task_done(self, task: TukioTask | None = None) -> None:
        """Unlock the workflow when `task` (by default the running task) ends.

        See the 'skip-until-unlock' overrun policy.

        Raises:
            RuntimeError: `task` (or the running task) is not one this workflow runs.
        """
        if task is None:
            self._unlock_task = self._calling_task()
        elif isinstance(task, TukioTask) and task.workflow is self and task.template is not None:
            if not task.in_progress():
                self._release_lock()
            else:
                self._unlock_task = task
        else:
            raise RuntimeError(f"workflow {self._uid}: {task!r} is not one of its tasks")

    def _calling_task(self) -> TukioTask:
        task = asyncio.current_task()
        if not isinstance(task, TukioTask) or task.workflow is not self or task.template is None:
            raise RuntimeError(f"workflow {self._uid}: must be called from one of its running tasks")
        return task
