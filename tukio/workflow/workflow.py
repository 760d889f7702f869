"""`Workflow`: one execution of a workflow template, awaitable like a future."""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
import time
from typing import TYPE_CHECKING, Any

from tukio._loop import resolve_loop
from tukio.broker import Broker, get_broker, workflow_exec_topics
from tukio.errors import JournalError
from tukio.event import Event, EventSource
from tukio.task.factory import start_task
from tukio.task.states import TaskExecState
from tukio.task.task import TukioTask, utc
from tukio.task.template import TaskTemplate
from tukio.utils import FutureState, TimeoutHandle, describe_error, new_uid
from tukio.workflow.lock import WorkflowLock
from tukio.workflow.rescue import Start, plan_rescue
from tukio.workflow.retries import Retries, retry_error
from tukio.workflow.states import WorkflowExecState
from tukio.workflow.template import WorkflowTemplate

if TYPE_CHECKING:
    from tukio.store.journal import Journal

__all__ = ["Workflow"]

log = logging.getLogger(__name__)

_current: contextvars.ContextVar[Workflow | None] = contextvars.ContextVar("tukio_workflow", default=None)

_FLOWING = frozenset({FutureState.finished, FutureState.skipped, FutureState.timeout})


class _Halt(enum.Enum):
    cancel = "cancel"
    suspend = "suspend"


class Workflow(asyncio.Future):  # type: ignore[type-arg]
    """An execution of a `WorkflowTemplate`.

    Await it for the set of its tasks. It never fails because a task failed;
    it ends in error only when its template cannot run (no single root).

    Args:
        template: what to run.
        loop: the loop to run on (the running loop when None).
        broker: where execution events go (the loop's broker when None).
        journal: records every transition durably (see `tukio.store`); the
            successors of a task start only once its end is recorded.
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
    _retries: Retries | None = None
    _journal: Journal | None = None
    _holding: set[TukioTask] | None = None

    def __init__(
        self,
        template: WorkflowTemplate,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        broker: Broker | None = None,
        journal: Journal | None = None,
    ) -> None:
        loop = resolve_loop(loop)
        super().__init__(loop=loop)
        self.uid = new_uid()
        self.template = template
        self.policy = template.policy
        self.broker = broker if broker is not None else get_broker(loop)
        if journal is not None:
            self._journal = journal
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
    def uid(self) -> str:
        """The execution id (a rescued workflow takes the one of its report)."""
        return self._uid

    @uid.setter
    def uid(self, uid: str) -> None:
        self._uid = uid
        # Built once per id: every execution event goes to these topics.
        self._exec_topics = workflow_exec_topics(uid)

    @property
    def exec_topics(self) -> tuple[str, str]:
        """The two topics this workflow's execution events go to."""
        return self._exec_topics

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

        With a journal, the root starts (and None is returned) once the
        triggering data is recorded.

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
        if self._journal is not None:
            self._run_journaled(data)
            return None
        task = self._start_task(self._plan.root, data)
        if self._pending == 0:
            self._finish()
        return task

    def _run_journaled(self, data: Any) -> None:
        """Start the root once the triggering data is durable (write-ahead)."""
        assert self._journal is not None
        self._pending += 1

        def start_root(error: BaseException | None) -> None:
            self._pending -= 1
            if error is not None:
                self._error = error
            elif self._halt is not _Halt.cancel:
                assert self._plan.root is not None
                root = self._start_task(self._plan.root, data)
                if root is not None and self._halt is _Halt.suspend:
                    root.suspend()
            if self._pending == 0:
                self._finish()

        refused = self._journal.workflow_begin(self, data.data if isinstance(data, Event) else data, start_root)
        if refused is not None:
            self._pending -= 1
            self._error = JournalError(refused)
            self._finish()

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
        if rescue.attempts:
            self._retries = Retries(rescue.attempts)
        self._arm_timeout()
        log.info(
            "[%s] workflow rescued: %d task(s) kept, %d restarted", self.uid, len(rescue.kept), len(rescue.to_start)
        )
        if self._journal is not None:
            self._journal.workflow_rescued(self, rescue.kept)
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
        task.on_ended(self._on_task_done)
        if self._journal is not None:
            tid = template.uid
            self._journal.task_record(self, tid, lambda: self._task_report(tid))
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
        if self._journal is not None:
            self._journal.task_record(self, template.uid, self._failures[template.uid])

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return self.get_loop()

    def _on_task_done(self, task: asyncio.Future[Any]) -> None:
        assert isinstance(task, TukioTask)
        assert task.template is not None
        if self._journal is not None and self._hold_for_journal(task):
            return
        self._pending -= 1
        if task is self._unlock_task:
            self.lock.release()
        state = task.future_state
        tid = task.template.uid
        if state is FutureState.suspended:
            if self._suspended is None:
                self._suspended = {}
            self._suspended[tid] = task
        elif self._halt is None and self._should_retry(task):
            pass
        elif state in _FLOWING and (self._failures is None or tid not in self._failures):
            if self._halt is None:
                self._flow(task)
            elif self._halt is _Halt.suspend:
                if self._deferred is None:
                    self._deferred = []
                self._deferred.append(task)
        if self._pending == 0 and not (self._halt is _Halt.suspend and (self._suspended or self._deferred)):
            self._finish()

    def _hold_for_journal(self, task: TukioTask) -> bool:
        """Record the end of `task`; True while the record is not durable yet.

        `_on_task_done` runs again once it is: only then do successors start.
        A task about to be retried is not held (`_should_retry` records it).
        """
        assert self._journal is not None
        assert task.template is not None
        if self._holding is not None and task in self._holding:
            self._holding.discard(task)
            return False
        if self._halt is None and self._retry_error(task) is not None:
            return False
        tid = task.template.uid
        entry = self._task_report(tid)
        assert entry is not None
        if self._holding is None:
            self._holding = set()
        self._holding.add(task)

        def durable(error: BaseException | None) -> None:
            if error is not None:
                self._refuse(tid, describe_error(error))
            self._on_task_done(task)

        refused = self._journal.task_end(self, tid, entry, durable)
        if refused is not None:
            self._refuse(tid, refused)
        return True

    def _refuse(self, tid: str, error: str) -> None:
        """Fail task `tid` because the journal could not record it; its branch stops."""
        if self._failures is None:
            self._failures = {}
        self._failures[tid] = {"state": FutureState.exception.value, "outputs": None, "error": error}

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

    # -- retries (see tukio.workflow.retries) ----------------------------------
    def will_retry(self, task: TukioTask) -> bool:
        """True when `task`, which has just ended, is to be run again by its retry policy."""
        return self._halt is None and self._retry_error(task) is not None

    def _retry_error(self, task: TukioTask) -> BaseException | None:
        if self._retries is None:
            return retry_error(task, 0)
        return self._retries.error_of(task)

    def _should_retry(self, task: TukioTask) -> bool:
        exc = self._retry_error(task)
        if exc is None:
            return False
        assert task.template is not None
        if self._retries is None:
            self._retries = Retries()
        self._retries.schedule(task, exc, self._retry)
        self._pending += 1
        if self._journal is not None:
            # Recorded as pending: a crash before the next attempt runs it again.
            tid = task.template.uid
            entry = self._task_report(tid)
            assert entry is not None
            entry["state"] = FutureState.pending.value
            entry.pop("error", None)
            self._journal.task_record(self, tid, entry)
        return True

    def _retry(self, task: TukioTask) -> None:
        assert task.template is not None
        self._pending -= 1
        self._start_task(task.template, task.argument)
        if self._pending == 0:
            self._finish()

    def _drop_retries(self) -> list[TukioTask]:
        if self._retries is None:
            return []
        tasks = self._retries.drop()
        self._pending -= len(tasks)
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

        As in the original, ids that are not successors of the calling task
        are ignored (and logged at warning level); an empty list starts none.

        Raises:
            RuntimeError: not called from a task this workflow runs.
        """
        tid = self._calling_task().template.uid  # type: ignore[union-attr]
        allowed = self._plan.successors[tid]
        chosen = []
        for i in task_ids:
            if i in allowed:
                chosen.append(i)
            else:
                log.warning("[%s] task %s: %r is not one of its successors %s, ignored", self.uid, tid, i, [*allowed])
        if self._next is None:
            self._next = {}
        self._next[tid] = tuple(chosen)

    def unlock_when_task_done(self, task: TukioTask | None = None) -> None:
        """Unlock the workflow when `task` (by default the running task) ends.

        See the 'skip-until-unlock' overrun policy.

        Raises:
            RuntimeError: `task` (or the running task) is not one this workflow runs.
        """
        if task is None:
            self._unlock_task = self._calling_task()
        elif isinstance(task, TukioTask) and task.workflow is self and task.template is not None:
            if task.done():
                self.lock.release()
            else:
                self._unlock_task = task
        else:
            raise RuntimeError(f"workflow {self.uid}: {task!r} is not one of its tasks")

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
        # The original's contents: the exception for 'workflow-error'; for
        # 'workflow-end', None, or {'cancel': True} when cancelled (or timed out).
        if state is FutureState.exception:
            self._emit(WorkflowExecState.error, self._error)
        elif state in (FutureState.cancelled, FutureState.timeout):
            self._emit(WorkflowExecState.end, {"cancel": True})
        else:
            self._emit(WorkflowExecState.end, None)
        if self._journal is not None:
            error = describe_error(self._error) if state is FutureState.exception and self._error else None
            self._journal.workflow_end(self, state.value, error)

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
            if self._failures is not None and tid in self._failures:
                entry.update(self._failures[tid])
        elif self._failures is not None and tid in self._failures:
            entry = dict(self._failures[tid])
        elif self._kept is not None and tid in self._kept:
            entry = dict(self._kept[tid])
        else:
            return None
        attempts = self._retries.made(tid) if self._retries is not None else None
        if attempts:
            entry["attempts"] = attempts
        return entry

    def __repr__(self) -> str:
        return f"<Workflow {self.uid} template={self.template.uid!r} {self.future_state.value}>"
