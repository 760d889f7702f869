"""What can be seen of a workflow from outside: its execution events and its report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tukio._report import task_entry, utc
from tukio.event import EventSource
from tukio.task.states import TaskExecState
from tukio.workflow.states import WorkflowExecState

if TYPE_CHECKING:
    from tukio.broker import Broker
    from tukio.task.task import TukioTask
    from tukio.utils import FutureState
    from tukio.workflow.retries import Retries
    from tukio.workflow.template import WorkflowTemplate

__all__ = ["Observed"]


class Observed:
    """The events and reports of a `Workflow` (a mixin: the workflow holds the state)."""

    if not TYPE_CHECKING:
        # No slots of its own: `Workflow` declares them all (mypy would check
        # this mixin's assignments against an empty tuple).
        __slots__ = ()

    # Set by Workflow.
    broker: Broker
    template: WorkflowTemplate
    tasks_by_id: dict[str, TukioTask]
    _uid: str
    _start: float | None
    _end: float | None
    _failures: dict[str, dict[str, Any]] | None
    _kept: dict[str, dict[str, Any]] | None
    _retries: Retries | None

    if TYPE_CHECKING:

        @property
        def future_state(self) -> FutureState: ...

        @property
        def exec_topics(self) -> tuple[str, str]: ...

    # -- events ----------------------------------------------------------------------
    def listened(self) -> bool:
        """True when someone listens to this workflow's execution events."""
        broker = self.broker
        return broker.listened() and broker.has_listeners(self.exec_topics)

    def emit(self, kind: str, content: Any, task: TukioTask | None = None, task_id: str | None = None) -> None:
        """Dispatch an execution event on this workflow's topics: the one place that does.

        Nothing is built when nobody listens.

        Args:
            kind: the event's 'type' (a `WorkflowExecState` or `TaskExecState` value).
            content: the event's 'content'.
            task: the task the event is about (its `event_source` is the source).
            task_id: else the id of a task template that has no task (its creation failed).
        """
        broker = self.broker
        if broker.listened() and broker.has_listeners(self.exec_topics):
            source = task.event_source if task is not None else self.source(task_id)
            broker.dispatch({"type": kind, "content": content}, self.exec_topics, source)

    def _emit(self, kind: WorkflowExecState | TaskExecState, content: Any, task_id: str | None = None) -> None:
        broker = self.broker
        if broker.listened() and broker.has_listeners(self.exec_topics):  # else nothing to build
            broker.dispatch({"type": kind._value_, "content": content}, self.exec_topics, self.source(task_id))

    def source(self, task_id: str | None = None, task_exec_id: str | None = None) -> EventSource:
        """The `EventSource` naming this workflow (and one of its tasks): the one place that builds them."""
        return EventSource(self.template.uid, self._uid, task_id, task_exec_id)

    # -- reports ---------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """Return the template's `as_dict()` with what happened in 'exec' keys.

        The workflow gets ``'exec': {'id','start','end','state','version'}``
        ('version': the template's `version`); each task
        ``'exec'``: its `task_entry`, None if it never started.
        """
        report = self.template.as_dict()
        report["exec"] = {
            "id": self._uid,
            "start": utc(self._start),
            "end": utc(self._end),
            "state": self.future_state.value,
            "version": self.template.version,
        }
        for task_dict in report["tasks"]:
            task_dict["exec"] = self.task_entry(task_dict["id"])
        return report

    def entry_is_the_tasks(self, task_id: str) -> bool:
        """True when the report entry of task `task_id` is made from its task alone.

        That is, no failure was recorded for it apart from its task and the
        workflow retries nothing: the journal can then build the task's
        record from the task's own fields, without `task_entry`.
        """
        failures = self._failures
        return (failures is None or task_id not in failures) and self._retries is None

    def task_entry(self, task_id: str) -> dict[str, Any] | None:
        """Return the report entry of task `task_id`, None if it never started.

        The entry is the task's `as_dict()` plus 'reporting' (from its
        holder's `report()`; the error text when that raised), 'error' when
        it failed and 'attempts' when it was retried.
        """
        task = self.tasks_by_id.get(task_id)
        override = self._failures.get(task_id) if self._failures is not None else None
        if task is None and override is None and self._kept is not None:
            override = self._kept.get(task_id)
        attempts = self._retries.made(task_id) if self._retries is not None else None
        return task_entry(task, override, attempts, f"[{self._uid}] task {task_id}")

    def dispatch_progress(self, data: Any) -> None:
        """Dispatch a 'workflow-progress' event with `data`."""
        self._emit(WorkflowExecState.progress, data)
