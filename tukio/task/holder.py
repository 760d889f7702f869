"""`TaskHolder`: the optional base class of class-based tasks."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tukio.event import Event
    from tukio.task.task import TukioTask

__all__ = ["TaskHolder"]


class TaskHolder:
    """Holds a task's configuration and state while its coroutine runs.

    Subclass it and register the class with ``@register(name, 'method')``; any
    class whose ``__init__`` takes the config works too.

    Args:
        config: the task's configuration (``{}`` when None).
    """

    _task: TukioTask | None = None
    _queue: asyncio.Queue[Event] | None = None

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config: dict[str, Any] = config if config is not None else {}
        self.uid = str(uuid.uuid4())

    @property
    def queue(self) -> asyncio.Queue[Event] | None:
        """Where events for the running task land (None before it runs)."""
        if self._queue is None and self._task is not None:
            self._queue = self._task.queue
        return self._queue

    @queue.setter
    def queue(self, queue: asyncio.Queue[Event] | None) -> None:
        self._queue = queue

    def attach(self, task: TukioTask) -> None:
        """Bind the holder to the task running it (done by the task itself)."""
        self._task = task

    def report(self) -> Any:
        """Return extra data for the workflow report, or None."""
        return None

    def teardown(self) -> Any:
        """Called when the task is cancelled or times out; returns its outputs."""
        return None
