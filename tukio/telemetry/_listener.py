"""`TelemetryListener`: OpenTelemetry spans and metrics from a workflow's transitions.

One span per execution (its parent: the OpenTelemetry context current where
the workflow was triggered) and one per task attempt, child of its
execution's span. Metrics count executions (started, finished by state,
failed, skipped by their overrun policy, queued), takeovers and lease
losses, and record task durations.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from tukio.recorder import WRITTEN, Recorder, Written

if TYPE_CHECKING:
    from tukio.event import Event
    from tukio.workflow.template import WorkflowTemplate
    from tukio.workflow.workflow import Workflow

__all__ = ["TelemetryListener"]

#: Workflow and task states that are failures.
_FAILED = frozenset({"exception", "timeout"})


@dataclass
class _Run:
    """What the listener keeps of one running execution."""

    span: Span
    context: otel_context.Context
    attributes: dict[str, Any]
    tasks: dict[str, tuple[Span, float]] = field(default_factory=dict)  # task id -> span, monotonic start
    attempts: dict[str, int] = field(default_factory=dict)
    failed: bool = False


def template_attributes(template: WorkflowTemplate, node: str | None) -> dict[str, Any]:
    """Return the span and metric attributes naming `template` (and the node, when known)."""
    attributes: dict[str, Any] = {"tukio.template": template.uid, "tukio.version": template.version}
    if node is not None:
        attributes["tukio.node"] = node
    return attributes


class TelemetryListener(Recorder):
    """A recorder that makes OpenTelemetry spans and metrics (see `tukio.telemetry.instrument`).

    Args:
        tracer: makes the spans.
        meter: makes the instruments.
        node: the engine's node name in its cluster (an attribute), or None.
    """

    __slots__ = (
        "_durations",
        "_failed",
        "_finished",
        "_lost",
        "_node",
        "_runs",
        "_skipped",
        "_started",
        "_taken",
        "_takeovers",
        "_tracer",
    )

    def __init__(self, tracer: Tracer, meter: Meter, node: str | None) -> None:
        self._tracer = tracer
        self._node = node
        self._runs: dict[str, _Run] = {}
        self._taken: set[str] = set()  # executions taken over, resumed next
        self._started = meter.create_counter("tukio.executions.started", "{execution}", "Executions started")
        self._finished = meter.create_counter(
            "tukio.executions.finished", "{execution}", "Executions ended (attribute tukio.state: how)"
        )
        self._failed = meter.create_counter(
            "tukio.executions.failed", "{execution}", "Executions that failed, or where a task failed or timed out"
        )
        self._skipped = meter.create_counter(
            "tukio.executions.skipped", "{execution}", "Triggers that started nothing (overrun policy)"
        )
        meter.create_observable_gauge(
            "tukio.executions.queued", [_no_queue], "{execution}", "Executions waiting for a slot (no flow control yet)"
        )
        self._durations = meter.create_histogram("tukio.task.duration", "s", "Task durations, per attempt")
        self._takeovers = meter.create_counter("tukio.takeovers", "{execution}", "Executions taken over by this node")
        self._lost = meter.create_counter("tukio.lease_losses", "{execution}", "Executions lost to other nodes")

    # -- executions --------------------------------------------------------------------
    def _open(self, workflow: Workflow, resumed: bool) -> None:
        attributes = template_attributes(workflow.template, self._node)
        span_attributes = {**attributes, "tukio.execution_id": workflow.uid}
        if resumed:
            span_attributes["tukio.resumed"] = True
        span = self._tracer.start_span(f"tukio.execution {workflow.template.uid}", attributes=span_attributes)
        self._runs[workflow.uid] = _Run(span, trace.set_span_in_context(span), attributes)
        self._started.add(1, attributes)

    def workflow_begin(self, workflow: Workflow, data: Any) -> Written:
        """Open the execution's span, child of the trigger's current context."""
        uid = workflow.uid
        self._open(workflow, uid in self._taken)
        self._taken.discard(uid)
        return WRITTEN

    def workflow_rescued(self, workflow: Workflow, kept: dict[str, dict[str, Any]]) -> None:
        """Open the span of an execution resumed after a recovery or a takeover (marked so)."""
        self._taken.discard(workflow.uid)
        self._open(workflow, True)

    def workflow_end(self, workflow: Workflow, state: str, error: str | None) -> None:
        """Close the execution's span (and any task span left open), count how it ended."""
        run = self._runs.pop(workflow.uid, None)
        if run is None:
            return
        for task_id in list(run.tasks):
            self._close_task(run, workflow, task_id, state, None)
        run.span.set_attribute("tukio.state", state)
        if state in _FAILED:
            run.span.set_status(Status(StatusCode.ERROR, error))
        run.span.end()
        self._finished.add(1, {**run.attributes, "tukio.state": state})
        if run.failed or state in _FAILED:
            self._failed.add(1, run.attributes)

    def workflow_skipped(self, template: WorkflowTemplate) -> None:
        """Count a trigger the overrun policy skipped."""
        self._skipped.add(1, template_attributes(template, self._node))

    def executions_taken_over(self, exec_ids: list[str]) -> None:
        """Count executions taken over; their spans are marked resumed."""
        self._taken.update(exec_ids)
        self._takeovers.add(len(exec_ids), {"tukio.node": self._node or ""})

    def executions_lost(self, exec_ids: list[str]) -> None:
        """Count executions lost to other nodes."""
        self._lost.add(len(exec_ids), {"tukio.node": self._node or ""})

    # -- tasks ---------------------------------------------------------------------------
    def task_started(self, workflow: Workflow, task_id: str) -> None:
        """Open a span for this attempt of the task."""
        run = self._runs.get(workflow.uid)
        if run is None:
            return
        attempt = run.attempts.get(task_id, 0) + 1
        run.attempts[task_id] = attempt
        task = workflow.tasks_by_id.get(task_id)
        attributes = {
            **run.attributes,
            "tukio.execution_id": workflow.uid,
            "tukio.task_id": task_id,
            "tukio.attempt": attempt,
        }
        if task is not None and task.template is not None:
            attributes["tukio.task"] = task.template.name
        span = self._tracer.start_span(f"tukio.task {task_id}", context=run.context, attributes=attributes)
        run.tasks[task_id] = (span, time.monotonic())

    def task_retrying(self, workflow: Workflow, task_id: str) -> None:
        """Close the span of a failed attempt that will run again."""
        run = self._runs.get(workflow.uid)
        if run is not None:
            self._close_task(run, workflow, task_id, "exception", "retrying")

    def task_ended(self, workflow: Workflow, task_id: str) -> Written:
        """Close the task's span with its state; record its duration."""
        run = self._runs.get(workflow.uid)
        if run is not None:
            self._close_task(run, workflow, task_id, None, None)
        return WRITTEN

    def task_event(self, workflow: Workflow, task_id: str, event: Event) -> Written:
        """Add the event a running task receives to its span."""
        run = self._runs.get(workflow.uid)
        opened = run.tasks.get(task_id) if run is not None else None
        if opened is not None:
            attributes = {"tukio.topic": event.topic} if event.topic is not None else {}
            source = event.source
            if source is not None and source.task_template_id is not None:
                attributes["tukio.source_task"] = source.task_template_id
            opened[0].add_event("tukio.event", attributes)
        return WRITTEN

    def _close_task(self, run: _Run, workflow: Workflow, task_id: str, state: str | None, note: str | None) -> None:
        opened = run.tasks.pop(task_id, None)
        if opened is None:
            return
        span, start = opened
        task = workflow.tasks_by_id.get(task_id)
        error = task.error if task is not None else None
        if task is None or not workflow.entry_is_the_tasks(task_id):  # the workflow recorded a failure of it
            entry = workflow.task_entry(task_id) or {}
            state = state or entry.get("state") or "unknown"
            description = entry.get("error")
        else:  # the usual case: the task alone says how it ended (no report entry built)
            state = state or task.future_state.value
            description = f"{type(error).__name__}: {error}" if error is not None else None
        span.set_attribute("tukio.state", state)
        if state in _FAILED:
            run.failed = run.failed or note is None  # a failed attempt that is retried does not fail it
            if isinstance(error, Exception):
                span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, note or description))
        span.end()
        attributes = {**run.attributes, "tukio.task_id": task_id, "tukio.state": state}
        self._durations.record(time.monotonic() - start, attributes)


def _no_queue(options: CallbackOptions) -> Iterable[Observation]:
    """The queued executions: always 0, tukio has no flow control (durable queue) yet."""
    return [Observation(0)]
