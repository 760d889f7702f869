"""The execution events a workflow emits."""

from __future__ import annotations

import enum

__all__ = ["WorkflowExecState"]


class WorkflowExecState(str, enum.Enum):
    """Types of the execution events of a workflow (the event's ``'type'``)."""

    begin = "workflow-begin"
    end = "workflow-end"
    error = "workflow-error"
    progress = "workflow-progress"
    suspend = "workflow-suspend"
    resume = "workflow-resume"

    def __str__(self) -> str:
        return self.value
