"""Planning the rebuild of a workflow from its last report (rescue)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tukio._report import parse_time
from tukio.errors import RescueError
from tukio.utils import FutureState
from tukio.workflow.template import Plan

__all__ = ["RescuePlan", "parse_time", "plan_rescue"]

# End states a rescue keeps as they are; only some of them let data flow on.
_KEPT = frozenset(
    {FutureState.finished.value, FutureState.skipped.value, FutureState.exception.value, FutureState.timeout.value}
)
_FLOWING = frozenset({FutureState.finished.value, FutureState.skipped.value, FutureState.timeout.value})


@dataclass
class Start:
    """A task to (re)start: its id, data, and the parent the data comes from."""

    task_id: str
    data: Any
    parent_id: str | None = None
    parent_exec_id: str | None = None


@dataclass
class RescuePlan:
    """What `Workflow.fast_forward` does: keep, start, and deliver."""

    exec_id: str
    start: datetime | None
    kept: dict[str, dict[str, Any]] = field(default_factory=dict)
    to_start: list[Start] = field(default_factory=list)
    # Data of further done parents for tasks that restart (joins).
    to_deliver: list[Start] = field(default_factory=list)
    # Failed attempts of tasks that restart (retries go on counting).
    attempts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def plan_rescue(plan: Plan, report: Any) -> RescuePlan:
    """Decide what a rescue keeps and restarts, walking the graph from the root.

    Raises:
        RescueError: the report is malformed, the template has no single root,
            or the root never started.
    """
    if not isinstance(report, dict) or not isinstance(report.get("exec"), dict):
        raise RescueError("report: must be a workflow report with an 'exec' object")
    exec_id = report["exec"].get("id")
    if not isinstance(exec_id, str):
        raise RescueError("report: exec.id must be the workflow execution id")
    tasks = report.get("tasks")
    if not isinstance(tasks, list):
        raise RescueError("report: 'tasks' must be a list")
    if plan.root is None:
        raise RescueError(f"template: {plan.error}")
    execs: dict[str, dict[str, Any]] = {}
    for task in tasks:
        if isinstance(task, dict) and isinstance(task.get("exec"), dict):
            execs[task.get("id")] = task["exec"]  # type: ignore[index]
    root_exec = execs.get(plan.root.uid)
    if root_exec is None:
        raise RescueError(f"report: the root task {plan.root.uid!r} never started; nothing to rescue")

    result = RescuePlan(exec_id=exec_id, start=parse_time(report["exec"].get("start")))
    handled: dict[str, bool] = {}  # task id -> restarted (True) or kept (False)
    queue = deque([Start(plan.root.uid, root_exec.get("inputs"))])
    while queue:
        item = queue.popleft()
        tid = item.task_id
        if tid in handled:
            if handled[tid]:
                result.to_deliver.append(item)
            continue
        ex = execs.get(tid)
        state = ex.get("state") if ex is not None else None
        # A "finished" entry without an end time is not a recorded end (a
        # journal written by an older version could hold one): run it again.
        if ex is not None and state in _KEPT and not (state == FutureState.finished.value and ex.get("end") is None):
            handled[tid] = False
            result.kept[tid] = ex
            if state in _FLOWING:
                for succ in plan.successors.get(tid, ()):
                    queue.append(Start(succ, ex.get("outputs"), tid, ex.get("id")))
        else:
            handled[tid] = True
            result.to_start.append(item)
            if ex is not None and isinstance(ex.get("attempts"), list) and ex["attempts"]:
                result.attempts[tid] = list(ex["attempts"])
    return result
