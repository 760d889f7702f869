"""`Workflow`: one execution of a workflow template, awaitable like a future."""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
import time
import uuid
from typing import Any

from tukio._loop import resolve_loop
from tukio.broker import Broker, get_broker, workflow_exec_topics
from tukio.event import Event, EventSource
from tukio.task.factory import start_task
from tukio.task.states import TaskExecState
from tukio.task.task import TukioTask, utc
from tukio.task.template import TaskTemplate
from tukio.utils import FutureState, TimeoutHandle
from tukio.workflow.lock import WorkflowLock
from tukio.workflow.rescue import Start, plan_rescue
from tukio.workflow.states import WorkflowExecState
from tukio.workflow.template import WorkflowTemplate

__all__ = ["Workflow"]

log = logging.getLogger(__name__)

_current: contextvars.ContextVar[Workflow | None] = contextvars.ContextVar("tukio_workflow", default=None)

_FLOWING = frozenset({FutureState.finished, FutureState.skipped, FutureState.timeout})


class _Halt(enum.Enum):
    cancel = "cancel"
    suspend = "suspend"


def describe_error(exc: BaseException) -> str:
    """One line naming an exception: ``ValueError: boom``."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Workflow(asyncio.Future):  # type: ignore[type-arg]
    """An execution of a `WorkflowTemplate`.

    Await it for the set of its tasks. It never fails because a task failed;
    it ends in error only when its template cannot run (no single root).

    Args:
        template: what to run.
        loop: the loop to run on (the running loop when None).
        broker: where execution events go (the loop's broker when None).
    """

    # Rarely-set state lives on the class until an instance needs it.
    committed = False
    _timed_out = False
    _started = False
    _end: float | None = None
    _halt: _Halt | None = None
    _error: BaseException | None = None
    _timeout: TimeoutHandle | None = None
    _unlock_task: TukioTask | None = None
    _next: dict[str, tuple[str, ...]] | None = None
    _suspended: dict[str, TukioTask] | None = None
    _deferred: list[TukioTask] | None = None
    _failures: dict[str, dict[str, Any]] | None = None
    _kept: dict[str, dict[str, Any]] | None = None
    _attempts: dict[str, list[dict[str, Any]]] | None = None
    _retrying: dict[str, tuple[asyncio.TimerHandle, TukioTask]] | None = None

    def __init__(
        self,
        template: WorkflowTemplate,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        broker: Broker | None = None,
    ) -> None:
        loop = resolve_loop(loop)
        super().__init__(loop=loop)
        self.uid = str(uuid.uuid4())
        self.template = template
        self.policy = template.policy
        self.broker = broker if broker is not None else get_broker(loop)
        self.lock = WorkflowLock()
        self.tasks_by_id: dict[str, TukioTask] = {}
        self._plan = template.plan()
        self._start: float | None = None
        self._pending = 0

    # -- public state --------------------------------------------------------
    @property
    def tasks(self) -> set[TukioTask]:
        """The tasks created so far (the latest attempt of each)."""
        return set(self.tasks_by_id.values())

    @property
    def timed_out(self) -> bool:
        """True once the workflow's timeout expired."""
        return self._timed_out

    @property
    def exec_topics(self) -> tuple[str, str]:
        """The two topics this workflow's execution events go to."""
        return workflow_exec_topics(self.uid)

    @property
    def future_state(self) -> FutureState:
        """The workflow's state as a `FutureState`."""
        return FutureState.of(self, timed_out=self._timed_out, suspended=bool(self._suspended))

    @staticmethod
    def current_workflow(loop: asyncio.AbstractEventLoop | None = None) -> Workflow | None:
        """Return the workflow of the task running now, or None."""
        wf = getattr(asyncio.current_task(), "workflow", None)
        return wf if isinstance(wf, Workflow) else _current.get()

    # -- running -------------------------------------------------------------
    def run(self, event_or_dict: Event | dict[str, Any] | Any) -> TukioTask | None:
        """Start the root task with `event_or_dict`; return it (None if it failed).

        Raises:
            RuntimeError: the workflow was already started.
        """
        if self._started:
            raise RuntimeError(f"workflow {self.uid} was already started")
        self._started = True
        self._start = time.time()
        data = Event(event_or_dict) if isinstance(event_or_dict, dict) else event_or_dict
        self._emit(WorkflowExecState.begin, data.data if isinstance(data, Event) else data)
        if self._plan.root is None:
            self._error = self._plan.error
            log.error("[%s] workflow %s cannot run: %s", self.uid, self.template.uid, self._error)
            self._finish()
            return None
        self._arm_timeout()
        task = self._start_task(self._plan.root, data)
        if self._pending == 0:
            self._finish()
        return task

    def fast_forward(self, report: dict[str, Any]) -> None:
        """Rebuild this workflow from its last `report()` and go on from there.

        Tasks done in the report are kept and not run again; tasks pending,
        suspended or cancelled run again with their parent's outputs (the
        root with its own inputs); tasks never started whose parent is done
        start with the parent's outputs. The workflow takes the report's id.

        Raises:
            RescueError: the report is malformed or its root never started.
            RuntimeError: the workflow was already started.
        """
        if self._started:
            raise RuntimeError(f"workflow {self.uid} was already started")
        rescue = plan_rescue(self._plan, report)
        self._started = True
        self.uid = rescue.exec_id
        self._start = rescue.start.timestamp() if rescue.start is not None else time.time()
        self._kept = rescue.kept
        self._arm_timeout()
        log.info(
            "[%s] workflow rescued: %d task(s) kept, %d restarted", self.uid, len(rescue.kept), len(rescue.to_start)
        )
        for item in rescue.to_start:
            self._start_task(self._plan.by_id[item.task_id], self._rescue_event(item))
        for item in rescue.to_deliver:
            task = self.tasks_by_id.get(item.task_id)
            if task is not None and not task.done():
                task.queue.put_nowait(self._rescue_event(item))
        if self._pending == 0:
            self._finish()

    def _rescue_event(self, item: Start) -> Any:
        if item.parent_id is None:
            return Event(item.data) if isinstance(item.data, dict) else item.data
        source = EventSource(self.template.uid, self.uid, item.parent_id, item.parent_exec_id)
        return Event(item.data, source=source) if isinstance(item.data, dict) else item.data

    def _arm_timeout(self) -> None:
        if self.template.timeout is not None:
            self._timeout = TimeoutHandle(self, self.template.timeout)
            self._timeout.start()

    def _start_task(self, template: TaskTemplate, data: Any) -> TukioTask | None:
        token = _current.set(self)
        try:
            task = start_task(
                template.name, data, config=template.config, loop=self._loop, template=template, workflow=self
            )
        except Exception as exc:
            self._record_failure(template, data, exc)
            return None
        finally:
            _current.reset(token)
        self.tasks_by_id[template.uid] = task
        self._pending += 1
        task.add_done_callback(self._on_task_done)
        return task

    def _record_failure(self, template: TaskTemplate, data: Any, exc: Exception) -> None:
        log.error(
            "[%s] task %s (%s) could not be created: %s", self.uid, template.uid, template.name, describe_error(exc)
        )
        if self._failures is None:
            self._failures = {}
        now = utc(time.time())
        self._failures[template.uid] = {
            "id": None,
            "start": now,
            "end": now,
            "state": FutureState.exception.value,
            "inputs": data.data if isinstance(data, Event) else data,
            "outputs": None,
            "error": describe_error(exc),
        }
        source = EventSource(self.template.uid, self.uid, template.uid, None)
        self.broker.publish(self.exec_topics, TaskExecState.error.value, {"exception": exc}, lambda: source)

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return self.get_loop()

    def _on_task_done(self, task: asyncio.Future[Any]) -> None:
        assert isinstance(task, TukioTask)
        assert task.template is not None
        self._pending -= 1
        if task is self._unlock_task:
            self.lock.release()
        state = task.future_state
        tid = task.template.uid
        if state is FutureState.suspended:
            if self._suspended is None:
                self._suspended = {}
            self._suspended[tid] = task
        elif self._halt is None and self._should_retry(task, state):
            pass
        elif state in _FLOWING:
            if self._halt is None:
                self._flow(task)
            elif self._halt is _Halt.suspend:
                if self._deferred is None:
                    self._deferred = []
                self._deferred.append(task)
        if self._pending == 0 and not (self._halt is _Halt.suspend and (self._suspended or self._deferred)):
            self._finish()

    def _flow(self, task: TukioTask) -> None:
        """Start (or feed) the successors of `task` with its outputs."""
        assert task.template is not None
        tid = task.template.uid
        chosen = self._next.pop(tid, None) if self._next else None
        successors = chosen if chosen is not None else self._plan.successors[tid]
        if not successors:
            return
        outputs = task.outputs
        source = task.event_source
        for succ in successors:
            data = Event(outputs, source=source) if isinstance(outputs, dict) else outputs
            running = self.tasks_by_id.get(succ)
            if running is not None:
                if not running.done():
                    running.queue.put_nowait(data)
            elif self._failures is None or succ not in self._failures:
                self._start_task(self._plan.by_id[succ], data)

    # -- retries ---------------------------------------------------------------
    def _should_retry(self, task: TukioTask, state: FutureState) -> bool:
        assert task.template is not None
        policy = task.template.retry
        if policy is None or state not in (FutureState.exception, FutureState.timeout):
            return False
        exc = (
            task.exception()
            if state is FutureState.exception
            else TimeoutError(f"timed out after {task.template.timeout}s")
        )
        assert exc is not None
        tid = task.template.uid
        attempts = self._attempts.setdefault(tid, []) if self._attempts is not None else None
        if attempts is None:
            self._attempts = {tid: []}
            attempts = self._attempts[tid]
        attempt = len(attempts) + 1
        if attempt >= policy.max_attempts or not policy.matches(exc):
            return False
        delay = policy.next_delay(attempt)
        record = task.as_dict()
        record.update(attempt=attempt, error=describe_error(exc), next_delay=delay)
        attempts.append(record)
        log.warning(
            "[%s] task %s attempt %d failed (%s); retrying in %.3gs", self.uid, tid, attempt, describe_error(exc), delay
        )
        task.emit(TaskExecState.retry, {"attempt": attempt, "error": exc, "delay": delay})
        if self._retrying is None:
            self._retrying = {}
        self._retrying[tid] = (self._loop.call_later(delay, self._retry, task), task)
        self._pending += 1
        return True

    def _retry(self, task: TukioTask) -> None:
        assert task.template is not None
        assert self._retrying is not None
        del self._retrying[task.template.uid]
        self._pending -= 1
        self._start_task(task.template, task.argument)
        if self._pending == 0:
            self._finish()

    def _drop_retries(self) -> list[TukioTask]:
        if not self._retrying:
            return []
        tasks = []
        for handle, task in self._retrying.values():
            handle.cancel()
            tasks.append(task)
        self._pending -= len(tasks)
        self._retrying = None
        return tasks

    # -- control ---------------------------------------------------------------
    def cancel(self, msg: Any = None) -> bool:
        """Cancel every pending task; the workflow ends 'cancelled' once they are done.

        Returns False if the workflow had already ended.
        """
        if self.done():
            return False
        self._halt = _Halt.cancel
        if self._timeout is not None:
            self._timeout.cancel()
        self._drop_retries()
        self._suspended = self._deferred = None
        for task in self.tasks_by_id.values():
            if not task.done():
                task.cancel()
        if self._pending == 0:
            self._finish()
        return True

    def timeout(self) -> bool:
        """End the workflow as timed out (its tasks end 'cancelled')."""
        if self.done():
            return False
        self._timed_out = True
        return self.cancel()

    def suspend(self) -> bool:
        """Stop starting tasks and cancel the running ones, marked 'suspended'.

        Returns False when the workflow is not running.
        """
        if self.done() or not self._started or self._halt is not None:
            return False
        self._halt = _Halt.suspend
        if self._suspended is None:
            self._suspended = {}
        for task in self._drop_retries():
            assert task.template is not None
            self._suspended[task.template.uid] = task
        for task in list(self.tasks_by_id.values()):
            task.suspend()
        self._emit(WorkflowExecState.suspend, None)
        log.info("[%s] workflow suspended", self.uid)
        return True

    def resume(self) -> bool:
        """Restart the suspended tasks with their inputs and let the flow go on.

        Returns False when the workflow is not suspended.
        """
        if self._halt is not _Halt.suspend or self.done():
            return False
        self._halt = None
        suspended, deferred = self._suspended or {}, self._deferred or []
        self._suspended = self._deferred = None
        self._emit(WorkflowExecState.resume, None)
        log.info("[%s] workflow resumed", self.uid)
        for task in suspended.values():
            assert task.template is not None
            self._start_task(task.template, task.argument)
        for task in deferred:
            self._flow(task)
        if self._pending == 0:
            self._finish()
        return True

    def set_next_tasks(self, task_ids: list[str]) -> None:
        """Choose which successors of the running task start when it ends.

        Raises:
            RuntimeError: not called from a task of this workflow.
            ValueError: an id is not a successor of the running task.
        """
        tid = self._calling_task().template.uid  # type: ignore[union-attr]
        allowed = self._plan.successors[tid]
        unknown = [i for i in task_ids if i not in allowed]
        if unknown:
            raise ValueError(f"task {tid}: {', '.join(map(repr, unknown))} not among its successors {list(allowed)}")
        if self._next is None:
            self._next = {}
        self._next[tid] = tuple(task_ids)

    def unlock_when_task_done(self) -> None:
        """Unlock the workflow when the running task ends (see skip-until-unlock).

        Raises:
            RuntimeError: not called from a task of this workflow.
        """
        self._unlock_task = self._calling_task()

    def _calling_task(self) -> TukioTask:
        task = asyncio.current_task()
        if not isinstance(task, TukioTask) or task.workflow is not self or task.template is None:
            raise RuntimeError(f"workflow {self.uid}: must be called from one of its running tasks")
        return task

    def dispatch_progress(self, data: Any) -> None:
        """Dispatch a 'workflow-progress' event with `data`."""
        self._emit(WorkflowExecState.progress, data)

    # -- ending ------------------------------------------------------------------
    def _finish(self) -> None:
        if self.done():
            return
        self._end = time.time()
        if self._timeout is not None:
            self._timeout.cancel()
        if self._halt is _Halt.cancel:
            super().cancel()
        elif self._error is not None:
            self.set_exception(self._error)
        else:
            self.set_result(self.tasks)
        self.lock.release()
        state = self.future_state
        log.info("[%s] workflow %s ended: %s", self.uid, self.template.uid, state.value)
        if state is FutureState.exception:
            self._emit(WorkflowExecState.error, {"exception": self._error})
        else:
            self._emit(WorkflowExecState.end, {"state": state.value})

    def _emit(self, kind: WorkflowExecState, content: Any) -> None:
        self.broker.publish(self.exec_topics, kind.value, content, self._source)

    def _source(self) -> EventSource:
        return EventSource(workflow_template_id=self.template.uid, workflow_exec_id=self.uid)

    # -- reports ---------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """Return the template's `as_dict()` with what happened in 'exec' keys.

        The workflow gets ``'exec': {'id','start','end','state'}``; each task
        ``'exec'``: None if it never started, else its `as_dict()` plus
        'reporting' (from its holder's `report()`), 'error' when it failed and
        'attempts' when it was retried.
        """
        report = self.template.as_dict()
        report["exec"] = {
            "id": self.uid,
            "start": utc(self._start),
            "end": utc(self._end),
            "state": self.future_state.value,
        }
        for task_dict in report["tasks"]:
            task_dict["exec"] = self._task_report(task_dict["id"])
        return report

    def _task_report(self, tid: str) -> dict[str, Any] | None:
        task = self.tasks_by_id.get(tid)
        if task is not None:
            entry = task.as_dict()
            reporter = getattr(task.holder, "report", None)
            if callable(reporter):
                entry["reporting"] = reporter()
            if task.done() and not task.cancelled() and task.exception() is not None:
                entry["error"] = describe_error(task.exception())  # type: ignore[arg-type]
        elif self._failures is not None and tid in self._failures:
            entry = dict(self._failures[tid])
        elif self._kept is not None and tid in self._kept:
            entry = dict(self._kept[tid])
        else:
            return None
        if self._attempts and tid in self._attempts:
            entry["attempts"] = list(self._attempts[tid])
        return entry

    def __repr__(self) -> str:
        return f"<Workflow {self.uid} template={self.template.uid!r} {self.future_state.value}>"
