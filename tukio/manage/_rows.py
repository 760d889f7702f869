"""What `Manager` makes of the store's rows: summaries, filters, graphs, and which action applies."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from tukio._report import iso, parse_time
from tukio.manage._model import ExecutionSummary
from tukio.store._admin import FAILED_STATES, Filters, Row
from tukio.store.base import QUEUED, UNFINISHED
from tukio.utils import FutureState

__all__ = ["DONE", "FILTERS", "MAX_LIMIT", "STATES", "downstream", "eligible", "filters", "graph", "summary"]

#: The states an execution can be in (the `state` filter accepts these).
STATES = (*(s.value for s in FutureState), QUEUED)
#: The largest page a listing returns.
MAX_LIMIT = 1000
# Task states whose outputs a retry or a resume keeps.
DONE = frozenset({"finished", "skipped"})


def eligible(action: str, row: Row) -> bool:
    """Whether `action` applies to the execution `row` (what a bulk action selects)."""
    if action == "cancel":
        return row.state == UNFINISHED or row.state == QUEUED
    if row.state == UNFINISHED or row.state == QUEUED:
        return False
    if action == "resume":
        return row.state != "finished" or _failed(row)
    return True  # retry, delete


def _failed(row: Row) -> bool:
    return row.state in FAILED_STATES or row.task_error is not None


def _text(value: Any) -> Any:
    """A column as text: a damaged one that is not UTF-8 (bytes) is decoded with replacements."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def summary(row: Row) -> ExecutionSummary:
    """The summary of one execution's row."""
    error = _text(row.error)
    task_error = _text(row.task_error)
    return ExecutionSummary(
        id=_text(row.exec_id),
        template=_text(row.template_id),
        version=_text(row.version),
        state=_text(row.state),
        failed=_failed(row),
        node=_text(row.owner),
        start=parse_time(_text(row.start)),
        end=parse_time(_text(row.end)),
        error=error if error is not None else (f"task {task_error}" if task_error else None),
    )


def graph(report: dict[str, Any]) -> dict[str, list[str]]:
    """Task id -> successor ids, from the template in `report` (every task listed)."""
    graph: dict[str, list[str]] = {str(t.get("id")): [] for t in report.get("tasks", [])}
    for task_id, successors in (report.get("graph") or {}).items():
        graph[str(task_id)] = [successors] if isinstance(successors, str) else [str(s) for s in successors]
    return graph


def downstream(graph: dict[str, list[str]], task_id: str) -> set[str]:
    """`task_id` and every task after it."""
    seen = {task_id}
    todo = [task_id]
    while todo:
        for succ in graph.get(todo.pop(), []):
            if succ not in seen:
                seen.add(succ)
                todo.append(succ)
    return seen


def filters(
    state: str | Iterable[str] | None,
    failed: bool | None,
    template: str | None,
    version: str | None,
    node: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Filters:
    """Check the filters of a listing or a bulk action.

    Raises:
        ValueError: an unknown state, or a time that is not a datetime.
    """
    states = None
    if state is not None:
        states = (state,) if isinstance(state, str) else tuple(state)
        unknown = [s for s in states if s not in STATES]
        if unknown:
            raise ValueError(f"unknown state {unknown[0]!r}: expected one of {', '.join(STATES)}")
    for name, value in (("since", since), ("until", until)):
        if value is not None and not isinstance(value, datetime):
            raise ValueError(f"{name} must be a datetime, got {value!r}")
    return Filters(states, failed, template, version, node, iso(since), iso(until))


#: The filters of `Manager.list` a bulk action takes.
FILTERS = frozenset({"state", "failed", "template", "version", "node", "since", "until"})
