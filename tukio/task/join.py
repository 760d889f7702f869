"""`JoinTask`, registered as 'join': wait for several parents, merge their data."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any, Literal, TypedDict

from tukio.event import Event
from tukio.task.holder import TaskHolder
from tukio.task.registry import register

__all__ = ["JoinArrival", "JoinReport", "JoinTask"]


class JoinArrival(TypedDict):
    """One parent whose data reached the join, and when (UTC)."""

    id: str
    end_time: datetime


class JoinReport(TypedDict):
    """`JoinTask.report()`: the original's shape."""

    status: Literal["running", "done", "timeout"]
    tasks: list[JoinArrival]


@register("join", "execute")
class JoinTask(TaskHolder):
    """Waits until the awaited parents have all delivered their data.

    Config ``wait_for``: a count of parents, or a list of parent task ids
    (default: every parent of the task in its workflow). The task starts with
    its first parent's data and returns it with ``'data_stash'``, the list of
    every awaited parent's data in arrival order. On timeout, `teardown`
    returns what was gathered so far.

    Its `report()` has the original's shape: ``{'status': 'running' | 'done'
    | 'timeout', 'tasks': [{'id': parent task id, 'end_time': UTC datetime},
    ...]}``, one entry per parent whose data arrived, in arrival order. A
    'task-progress' event carrying that report (a snapshot) is dispatched at
    each arrival and when the join ends (done or timeout).

    Raises (at creation):
        TypeError: ``wait_for`` is neither a positive count nor a list of ids.
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        wait_for = self.config.get("wait_for")
        if wait_for is not None and not (
            (isinstance(wait_for, int) and not isinstance(wait_for, bool) and wait_for >= 1)
            or (isinstance(wait_for, list) and all(isinstance(i, str) for i in wait_for))
        ):
            raise TypeError(f"join: wait_for must be a positive count or a list of task ids, got {wait_for!r}")
        self.wait_for: int | list[str] | None = wait_for
        self.data_stash: list[Any] = []
        self._base: dict[str, Any] = {}
        self._remaining: set[str] | None = None
        self._count = 0
        self._status: Literal["running", "done", "timeout"] = "running"
        # (parent id, arrival as a POSIX time): made into the report's datetimes only when asked.
        self._arrivals: list[tuple[str, float]] = []

    def _progress(self) -> None:
        """Dispatch a 'task-progress' event with a snapshot of the report."""
        # The snapshot costs O(arrivals): only made when someone listens.
        if self._task is not None and self._task.listened():
            self._task.dispatch_progress(self.report())

    def _accepts(self, event: Any, workflow_id: str | None) -> str | None:
        """Return the parent id of `event` if it comes from this workflow."""
        if not isinstance(event, Event):
            return None
        exec_id, parent = event.source_ids()
        if exec_id != workflow_id or parent is None:
            return None
        return parent

    def _take(self, event: Any, workflow_id: str | None) -> None:
        parent = self._accepts(event, workflow_id)
        if parent is None:
            return
        data = event.data if isinstance(event, Event) else event
        self._arrivals.append((parent, time.time()))
        self._progress()
        if self._remaining is not None:
            if parent in self._remaining:
                self._remaining.discard(parent)
                self.data_stash.append(data)
        else:
            self._count -= 1
            self.data_stash.append(data)

    def _satisfied(self) -> bool:
        return not self._remaining if self._remaining is not None else self._count <= 0

    async def execute(self, event: Any) -> dict[str, Any]:
        """Gather the awaited parents' data; return the first with 'data_stash'."""
        task = asyncio.current_task()
        workflow = getattr(task, "workflow", None)
        template = getattr(task, "template", None)
        wf_id = workflow.uid if workflow is not None else None
        wait_for = self.wait_for
        if wait_for is None and workflow is not None and template is not None:
            wait_for = list(workflow.template.plan().parents.get(template.uid, ()))
        if isinstance(wait_for, list):
            self._remaining = set(wait_for)
        else:
            self._count = wait_for or 1
        self._base = dict(event.data) if isinstance(event, Event) else dict(event or {})
        self._take(event, wf_id)
        queue = self.queue
        assert queue is not None
        while not self._satisfied():
            # Whatever already arrived is taken without awaiting (no coroutine per arrival).
            self._take(queue.get_nowait() if not queue.empty() else await queue.get(), wf_id)
        self._status = "done"
        self._progress()
        return self._result()

    def _result(self) -> dict[str, Any]:
        return {**self._base, "data_stash": list(self.data_stash)}

    def report(self) -> JoinReport:
        """Return ``{'status', 'tasks': [{'id', 'end_time'}, ...]}`` (a copy)."""
        tasks: list[JoinArrival] = [
            {"id": parent, "end_time": datetime.fromtimestamp(when, timezone.utc)} for parent, when in self._arrivals
        ]
        return {"status": self._status, "tasks": tasks}

    def teardown(self) -> dict[str, Any]:
        """Return what was gathered so far (on timeout or cancellation).

        On timeout the report's status becomes 'timeout' and a last progress
        event is dispatched.
        """
        if self._task is not None and self._task.timed_out:
            self._status = "timeout"
            self._progress()
        return self._result()
