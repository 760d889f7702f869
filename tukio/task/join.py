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
        # Parents handed over by the workflow (see `parent_ended`) before `execute` started:
        # (parent id, its data, when). None once `execute` takes arrivals as they come.
        self._early: list[tuple[str, dict[str, Any], float]] | None = []
        self._woken = False
        self._workflow_id: str | None = None

    def _progress(self) -> None:
        """Dispatch a 'task-progress' event with a snapshot of the report."""
        # The snapshot costs O(arrivals): only made when someone listens.
        if self._task is not None and self._task.listened():
            self._task.dispatch_progress(self.report())

    def _take(self, events: list[Any], workflow_id: str | None) -> None:
        """Take arrived `events`, in order, until the join is satisfied (a batch: one call per wake).

        An event counts when it is an `Event` from this workflow's execution
        naming its parent task; with ``wait_for`` ids, only those parents'
        data go in the stash. Each counted event is in the report; a progress
        snapshot is dispatched for each only when someone listens.
        """
        task = self._task
        listened = task is not None and task.listened()
        now = time.time()  # the instant the join took this batch
        for event in events:
            if not isinstance(event, Event):
                continue
            exec_id, parent = event.source_ids()
            if exec_id != workflow_id or parent is None:
                continue
            self._arrive(parent, event.data, now, listened)

    def _arrive(self, parent: str, data: dict[str, Any], when: float, listened: bool) -> bool:
        """Count the data of `parent`, arrived at `when` (a POSIX time); return True once satisfied."""
        self._arrivals.append((parent, when))
        if listened:
            self._task.dispatch_progress(self.report())  # type: ignore[union-attr]
        remaining = self._remaining
        if remaining is None:
            self._count -= 1
            self.data_stash.append(data)
            return self._count <= 0
        if parent in remaining:
            remaining.discard(parent)
            self.data_stash.append(data)
        return not remaining

    def parent_ended(self, parent: str, outputs: dict[str, Any]) -> None:
        """Take the `outputs` of `parent`, a task of the join's workflow that has just ended.

        The workflow's way to deliver a parent's data to a running join: no
        `Event` and no queue, and the join's task wakes once, when it is
        satisfied, rather than at each arrival. `outputs` is copied (the
        parent keeps its own). Arrivals before the join's first step are
        taken, in order, when it starts; arrivals once it is satisfied are
        ignored (as the ones left in its queue).
        """
        if self._early is not None:
            self._early.append((parent, outputs.copy(), time.time()))
            return
        if self._status != "running" or self._satisfied():
            return
        queue = self.queue
        if queue is not None and queue.qsize():
            # Events queued before this arrival (a rescue's) come first.
            self._take(_drain(queue, self._needed()), self._workflow_id)
            if self._satisfied():
                return
        task = self._task
        satisfied = self._arrive(parent, outputs.copy(), time.time(), task is not None and task.listened())
        if satisfied and not self._woken and queue is not None:
            self._woken = True
            queue.put_nowait(_WAKE)  # type: ignore[arg-type]  # the join's task waits on its queue: wake it once

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
        self._workflow_id = wf_id
        self._take([event], wf_id)
        early, self._early = self._early or [], None  # from now on, arrivals are taken as they come
        listened = self._task is not None and self._task.listened()
        if early and not self._satisfied():
            for parent, data, when in early:
                if self._arrive(parent, data, when, listened):
                    break
        queue = self.queue
        assert queue is not None
        while not self._satisfied():
            if queue.qsize():
                # Everything that arrived since the last wake, in one batch; never
                # more than can still count, so the rest stays queued once satisfied.
                self._take(_drain(queue, self._needed()), wf_id)
            else:
                # One wake per loop turn: parents ending in the same turn queue behind this one.
                self._take([await queue.get()], wf_id)
        self._status = "done"
        self._progress()
        return self._result()

    def _needed(self) -> int:
        """The most events that can be taken without going past the last awaited one."""
        return len(self._remaining) if self._remaining is not None else self._count

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


#: Put in the join's queue to wake its task once satisfied (not an Event: `_take` skips it).
_WAKE = object()


def _drain(queue: asyncio.Queue[Any], most: int) -> list[Any]:
    """Take up to `most` events already in `queue`, without awaiting."""
    get = queue.get_nowait
    return [get() for _ in range(min(most, queue.qsize()))]
