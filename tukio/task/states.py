"""The execution events a task emits."""

from __future__ import annotations

import enum

from tukio.utils import SkipTask

__all__ = ["TaskExecState"]


class TaskExecState(str, enum.Enum):
    """Types of the execution events of a task (the event's ``'type'``).

    The members have the original's names (`BEGIN`, `END`, `ERROR`, `SKIP`,
    `PROGRESS`, `TIMEOUT`) plus `RETRY`; the lower-case names are aliases of
    the same members.
    """

    BEGIN = "task-begin"
    END = "task-end"
    ERROR = "task-error"
    SKIP = "task-skip"
    PROGRESS = "task-progress"
    TIMEOUT = "task-timeout"
    RETRY = "task-retry"
    # Aliases (same values, so the same members).
    begin = "task-begin"  # noqa: PIE796
    end = "task-end"  # noqa: PIE796
    error = "task-error"  # noqa: PIE796
    skip = "task-skip"  # noqa: PIE796
    progress = "task-progress"  # noqa: PIE796
    timeout = "task-timeout"  # noqa: PIE796
    retry = "task-retry"  # noqa: PIE796

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> list[str]:
        """Return the value of every member, in order."""
        return [member.value for member in cls]

    @classmethod
    def from_exception(cls, exc: BaseException) -> TaskExecState:
        """Return `SKIP` for a `SkipTask`, else `ERROR` (the event type of a task that raised `exc`)."""
        return cls.SKIP if isinstance(exc, SkipTask) else cls.ERROR
