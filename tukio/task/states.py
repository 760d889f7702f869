"""The execution events a task emits."""

from __future__ import annotations

import enum

__all__ = ["TaskExecState"]


class TaskExecState(str, enum.Enum):
    """Types of the execution events of a task (the event's ``'type'``)."""

    begin = "task-begin"
    end = "task-end"
    error = "task-error"
    skip = "task-skip"
    progress = "task-progress"
    timeout = "task-timeout"
    retry = "task-retry"

    def __str__(self) -> str:
        return self.value
