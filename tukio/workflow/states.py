"""The execution events a workflow emits."""

from __future__ import annotations

import enum

__all__ = ["WorkflowExecState"]


class WorkflowExecState(str, enum.Enum):
    """Types of the execution events of a workflow (the event's ``'type'``).

    The members have the original's names (`BEGIN`, `END`, `ERROR`,
    `PROGRESS`, `SUSPEND`, `RESUME`); the lower-case names are aliases of
    the same members.
    """

    BEGIN = "workflow-begin"
    END = "workflow-end"
    ERROR = "workflow-error"
    PROGRESS = "workflow-progress"
    SUSPEND = "workflow-suspend"
    RESUME = "workflow-resume"
    # Aliases (same values, so the same members).
    begin = "workflow-begin"  # noqa: PIE796
    end = "workflow-end"  # noqa: PIE796
    error = "workflow-error"  # noqa: PIE796
    progress = "workflow-progress"  # noqa: PIE796
    suspend = "workflow-suspend"  # noqa: PIE796
    resume = "workflow-resume"  # noqa: PIE796

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> list[str]:
        """Return the value of every member, in order."""
        return [member.value for member in cls]
