"""Retrying failed tasks: what one workflow tried, and the retries it waits on.

The policy itself (how many attempts, which delay) is `tukio.retry.RetryPolicy`,
read from the task template; this module applies it during an execution.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from tukio.task.states import TaskExecState
from tukio.task.task import TukioTask
from tukio.utils import FutureState, describe_error

__all__ = ["Retries", "retry_error"]

log = logging.getLogger(__name__)


def retry_error(task: TukioTask, attempts_made: int) -> BaseException | None:
    """The error `task` should be retried for, or None when its policy says no.

    A task is retried when it failed or timed out, its template has a retry
    policy whose ``on`` matches the error, and it has attempts left.
    """
    assert task.template is not None
    policy = task.template.retry
    state = task.future_state
    if policy is None or state not in (FutureState.exception, FutureState.timeout):
        return None
    if state is FutureState.exception:
        exc = task.error  # known once its end is recorded, before it is done()
        assert exc is not None
    else:
        exc = TimeoutError(f"timed out after {task.template.timeout}s")
    if attempts_made + 1 >= policy.max_attempts or not policy.matches(exc):
        return None
    return exc


class Retries:
    """The failed attempts of a workflow's tasks and the retries not yet due.

    Args:
        attempts: attempts already made, by task id (from a rescued report).
    """

    def __init__(self, attempts: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self._attempts: dict[str, list[dict[str, Any]]] = dict(attempts) if attempts else {}
        self._waiting: dict[str, tuple[asyncio.TimerHandle, TukioTask]] = {}

    def made(self, task_id: str) -> list[dict[str, Any]] | None:
        """A copy of the failed attempts of `task_id` (None when there were none)."""
        attempts = self._attempts.get(task_id)
        return list(attempts) if attempts else None

    def error_of(self, task: TukioTask) -> BaseException | None:
        """`retry_error` for `task`, counting the attempts recorded here."""
        assert task.template is not None
        return retry_error(task, len(self._attempts.get(task.template.uid, ())))

    def schedule(self, task: TukioTask, exc: BaseException, again: Callable[[TukioTask], None]) -> None:
        """Record the failed attempt of `task`, emit 'task-retry', call `again(task)` after the delay."""
        assert task.template is not None
        assert task.template.retry is not None
        tid = task.template.uid
        attempts = self._attempts.setdefault(tid, [])
        attempt = len(attempts) + 1
        delay = task.template.retry.next_delay(attempt)
        error = describe_error(exc)
        record = task.as_dict()
        record.update(attempt=attempt, error=error, next_delay=delay)
        attempts.append(record)
        exec_id = task.workflow.uid if task.workflow is not None else None
        log.warning("[%s] task %s attempt %d failed (%s); retrying in %.3gs", exec_id, tid, attempt, error, delay)
        task.emit(TaskExecState.retry, {"attempt": attempt, "error": exc, "delay": delay})
        handle = task.get_loop().call_later(delay, self._due, task, again)
        self._waiting[tid] = (handle, task)

    def _due(self, task: TukioTask, again: Callable[[TukioTask], None]) -> None:
        assert task.template is not None
        del self._waiting[task.template.uid]
        again(task)

    def drop(self) -> list[TukioTask]:
        """Cancel every retry not yet due; return the tasks that will not run again."""
        tasks = [task for _, task in self._waiting.values()]
        for handle, _ in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        return tasks
