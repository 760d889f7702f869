"""`Recorder`: what a workflow tells the outside world at each of its transitions.

A workflow calls its recorder at every step (begin, task started, task ended,
end...). The default `Recorder` does nothing; the engine's journal
(`tukio.store.journal.Journal`) is a recorder that writes each step to a
store. What a recorder must be able to delay (write-ahead: a task's
successors start only once its end is durable) is a `Written` it returns,
which the workflow always waits on. A do-nothing recorder returns `WRITTEN`,
already resolved: waiting on it costs one call, no turn of the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

    from tukio.event import Event
    from tukio.workflow.template import WorkflowTemplate
    from tukio.workflow.workflow import Workflow

__all__ = ["NULL_RECORDER", "WRITTEN", "Recorder", "Recorders", "Written"]

_T = TypeVar("_T")


class Written:
    """Resolves once what a recorder was given is durable (or could not be).

    Callbacks added with `then` run inline when it resolves, or at once when
    it already has: unlike an `asyncio.Future`, waiting costs no turn of the
    loop. It can also be awaited (awaiting raises the error it resolved with).
    """

    __slots__ = ("_callbacks", "_done", "_error")

    def __init__(self, error: BaseException | None = None, *, done: bool = False) -> None:
        self._done = done
        self._error = error
        self._callbacks: list[tuple[Callable[[Any, BaseException | None], None], Any]] | None = None

    def done(self) -> bool:
        """True once resolved."""
        return self._done

    @property
    def error(self) -> BaseException | None:
        """The error it resolved with (None while pending or on success)."""
        return self._error

    def then(self, callback: Callable[[_T, BaseException | None], None], arg: _T) -> None:
        """Call ``callback(arg, error)`` once resolved (now if it is).

        `error` is None when everything was recorded.
        """
        if self._done:
            callback(arg, self._error)
        elif self._callbacks is None:
            self._callbacks = [(callback, arg)]
        else:
            self._callbacks.append((callback, arg))

    def resolve(self, error: BaseException | None = None) -> None:
        """Resolve (once; later calls do nothing) and run the callbacks in order.

        A callback that raises does not keep the others from running: its
        error is passed to the loop's exception handler when a loop runs.
        """
        if self._done:
            return
        self._done, self._error = True, error
        callbacks, self._callbacks = self._callbacks, None
        for callback, arg in callbacks or ():
            try:
                callback(arg, error)
            except Exception as exc:
                _report(exc)

    def __await__(self) -> Generator[Any, None, None]:
        if not self._done:
            import asyncio

            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.then(_settle, future)
            yield from future.__await__()
        if self._error is not None:
            raise self._error


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if not future.done():
        future.set_result(None)


def _report(exc: Exception) -> None:
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        import logging

        logging.getLogger(__name__).error("a recorder callback failed: %r", exc)
        return
    loop.call_exception_handler({"message": "a recorder callback failed", "exception": exc})


#: Already resolved, without error: what a recorder returns when it has nothing to wait for.
WRITTEN = Written(done=True)


class Recorder:
    """Observes the transitions of workflows; the default does nothing.

    Every method is called on the event loop and must not raise: a recorder
    contains its own failures (a journal logs them and retries). Entries are
    pulled from the workflow (`Workflow.task_entry`) only when the recorder
    needs them, so a recorder that does not keep them costs nothing.
    """

    __slots__ = ()

    def workflow_begin(self, workflow: Workflow, data: Any) -> Written:
        """`workflow` starts with the triggering `data`; its root waits for the result."""
        return WRITTEN

    def workflow_rescued(self, workflow: Workflow, kept: dict[str, dict[str, Any]]) -> None:
        """`workflow` was rebuilt from a report, keeping the entries `kept` (by task id)."""

    def task_started(self, workflow: Workflow, task_id: str) -> None:
        """Task `task_id` of `workflow` started (or failed to be created)."""

    def task_retrying(self, workflow: Workflow, task_id: str) -> None:
        """Task `task_id` of `workflow` failed and will run again."""

    def task_ended(self, workflow: Workflow, task_id: str) -> Written:
        """Task `task_id` ended; its successors start once the result resolves.

        Resolving with an error fails the task in the report: its branch stops.
        """
        return WRITTEN

    def task_event(self, workflow: Workflow, task_id: str, event: Event) -> Written:
        """Running task `task_id` receives `event`; the task gets it once the result resolves.

        Results resolve in the order they were given (the task gets its
        events in that order). Resolving with an error means the event
        cannot be recorded: the task does not get it and fails.
        """
        return WRITTEN

    def workflow_end(self, workflow: Workflow, state: str, error: str | None) -> None:
        """`workflow` ended in `state` (`error` describes a failure)."""

    def flush(self) -> Written:
        """Return what resolves once everything recorded so far is durable."""
        return WRITTEN

    # -- what the engine tells (no workflow runs for these) --------------------------
    def workflow_skipped(self, template: WorkflowTemplate) -> None:
        """A trigger of `template` started nothing: its overrun policy skipped it."""

    def executions_taken_over(self, exec_ids: list[str]) -> None:
        """This node claimed `exec_ids` from dead nodes (they are resumed next)."""

    def executions_lost(self, exec_ids: list[str]) -> None:
        """This node lost `exec_ids` to other nodes (its lease had expired): they are cancelled here."""


#: The recorder of workflows that nothing observes.
NULL_RECORDER = Recorder()


class Recorders(Recorder):
    """One recorder that tells a `primary` and then each of its `listeners`.

    The primary (an engine's journal, or `NULL_RECORDER`) alone decides what
    the workflow waits for: a listener observes, it never delays the flow,
    and what it returns is ignored. A listener that raises is reported to
    the loop's exception handler; the others are still told.

    Args:
        primary: the recorder whose `Written` results the workflow waits on.
        listeners: recorders that observe the same transitions.
    """

    __slots__ = ("listeners", "primary")

    def __init__(self, primary: Recorder, listeners: tuple[Recorder, ...]) -> None:
        self.primary = primary
        self.listeners = listeners

    def _tell(self, call: Callable[[Recorder], object]) -> None:
        for listener in self.listeners:
            try:
                call(listener)
            except Exception as exc:
                _report(exc)

    def workflow_begin(self, workflow: Workflow, data: Any) -> Written:
        self._tell(lambda r: r.workflow_begin(workflow, data))
        return self.primary.workflow_begin(workflow, data)

    def workflow_rescued(self, workflow: Workflow, kept: dict[str, dict[str, Any]]) -> None:
        self.primary.workflow_rescued(workflow, kept)
        self._tell(lambda r: r.workflow_rescued(workflow, kept))

    def task_started(self, workflow: Workflow, task_id: str) -> None:
        self.primary.task_started(workflow, task_id)
        self._tell(lambda r: r.task_started(workflow, task_id))

    def task_retrying(self, workflow: Workflow, task_id: str) -> None:
        self.primary.task_retrying(workflow, task_id)
        self._tell(lambda r: r.task_retrying(workflow, task_id))

    def task_ended(self, workflow: Workflow, task_id: str) -> Written:
        written = self.primary.task_ended(workflow, task_id)
        self._tell(lambda r: r.task_ended(workflow, task_id))
        return written

    def task_event(self, workflow: Workflow, task_id: str, event: Event) -> Written:
        written = self.primary.task_event(workflow, task_id, event)
        self._tell(lambda r: r.task_event(workflow, task_id, event))
        return written

    def workflow_end(self, workflow: Workflow, state: str, error: str | None) -> None:
        self.primary.workflow_end(workflow, state, error)
        self._tell(lambda r: r.workflow_end(workflow, state, error))

    def flush(self) -> Written:
        return self.primary.flush()

    def workflow_skipped(self, template: WorkflowTemplate) -> None:
        self.primary.workflow_skipped(template)
        self._tell(lambda r: r.workflow_skipped(template))

    def executions_taken_over(self, exec_ids: list[str]) -> None:
        self.primary.executions_taken_over(exec_ids)
        self._tell(lambda r: r.executions_taken_over(exec_ids))

    def executions_lost(self, exec_ids: list[str]) -> None:
        self.primary.executions_lost(exec_ids)
        self._tell(lambda r: r.executions_lost(exec_ids))
