"""`Workflow`: one execution of a workflow template, awaitable like a future.

The workflow is a small state machine (`tukio.workflow._lifecycle`): it starts
the root task, and each time a task ends it tells its recorder
(`tukio.recorder`), waits for what the recorder returns (write-ahead), then
starts the task's successors with its outputs. Its other concerns live in
their own modules: cancel, suspend and the choices tasks make (`_control`),
events and reports (`_observed`), retries (`retries`), rescue (`rescue`),
the overrun gate (`overrun`) and the lock (`lock`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from tukio._loop import resolve_loop
from tukio._report import failure_entry
from tukio.broker import Broker, get_broker, workflow_exec_topics
from tukio.event import Event
from tukio.recorder import NULL_RECORDER, WRITTEN, Recorder, Written
from tukio.task._start import creating, creating_for, end_now, start_bound
from tukio.task.factory import install_factory
from tukio.task.join import JoinTask
from tukio.task.states import TaskExecState
from tukio.task.task import TukioTask
from tukio.task.template import TaskTemplate
from tukio.utils import FutureState, TimeoutHandle, describe_error, new_uid
from tukio.workflow._control import Control
from tukio.workflow._lifecycle import FUTURE_STATE, State, check_move
from tukio.workflow._observed import Observed
from tukio.workflow.lock import WorkflowLock
from tukio.workflow.rescue import Start, plan_rescue
from tukio.workflow.retries import Retries, retry_error
from tukio.workflow.states import WorkflowExecState
from tukio.workflow.template import WorkflowTemplate

__all__ = ["Workflow"]

log = logging.getLogger(__name__)


# Task end states whose outputs flow to the successors.
_FLOWING = frozenset({FutureState.finished, FutureState.skipped, FutureState.timeout})
# Looked up once (an enum member is a global and an attribute lookup each time).
_FINISHED = FutureState.finished
_RUNNING = State.RUNNING


class Workflow(Control, Observed, asyncio.Future):  # type: ignore[type-arg]
    """An execution of a `WorkflowTemplate`.

    Await it for the set of its tasks. It never fails because a task failed;
    it ends in error only when its template cannot run (no single root), or
    when its recorder could not record the triggering data.

    Args:
        template: what to run.
        loop: the loop to run on (the running loop when None).
        broker: where execution events go (the loop's broker when None).
        recorder: told of every transition (see `tukio.recorder`; the engine's
            journal is one); the successors of a task start once what it
            returns for the task's end resolves.
        eager_start: start tasks eagerly on Python 3.12+ (see `Engine`).
    """

    # Slots, no instance dict: a workflow is the one object every trigger makes.
    __slots__ = (
        "_begin",
        "_deferred",
        "_eager",
        "_end",
        "_error",
        "_failures",
        "_kept",
        "_life",
        "_lock",
        "_next",
        "_on_end",
        "_open",
        "_plan",
        "_retries",
        "_run_later",
        "_start",
        "_suspended",
        "_timeout",
        "_topics",
        "_uid",
        "_unlock_callback",
        "_unlock_task",
        "_unlocked",
        "_waiting_for",
        "broker",
        "committed",
        "policy",
        "recorder",
        "tasks_by_id",
        "template",
    )
    _topics: tuple[str, str] | None
    _end: float | None
    _error: BaseException | None
    _timeout: TimeoutHandle | None
    _unlock_task: TukioTask | None
    _next: dict[str, tuple[str, ...]] | None
    _suspended: dict[str, TukioTask] | None
    _deferred: list[TukioTask] | None
    _failures: dict[str, dict[str, Any]] | None
    _kept: dict[str, dict[str, Any]] | None
    _retries: Retries | None
    _waiting_for: int  # workflows aborted for this one, not ended yet (abort-running)
    _run_later: tuple[Any, Written] | None
    _begin: Written | None  # what resolves once the begin is recorded
    # The lock is made on first use (see `lock`): most workflows only need to know
    # whether they unlocked, and whom to tell (the engine) when they do.
    _lock: WorkflowLock | None
    _unlocked: bool
    _unlock_callback: Callable[[], None] | None
    _on_end: Callable[[Workflow], Any] | None

    def __init__(
        self,
        template: WorkflowTemplate,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        broker: Broker | None = None,
        recorder: Recorder | None = None,
        eager_start: bool = False,
    ) -> None:
        if loop is None:
            loop = resolve_loop(loop)
        super().__init__(loop=loop)
        self._uid = new_uid()
        self._topics = None
        self.template = template
        self.policy = template.policy
        if broker is None:  # not made by an engine: install what an engine installs
            broker = get_broker(loop)
            install_factory(loop)  # plain tasks its tasks create know their workflow (see `current_workflow`)
        self.broker = broker
        self.recorder = recorder if recorder is not None else NULL_RECORDER
        self.tasks_by_id: dict[str, TukioTask] = {}
        self._plan = template.plan()
        self._eager = eager_start
        self._life = State.CREATED
        self._start: float | None = None
        # What the workflow waits for: running tasks, due retries, the recorder.
        self._open = 0
        self.committed = False
        self._end = self._error = self._timeout = self._unlock_task = self._next = None
        self._suspended = self._deferred = self._failures = self._kept = self._retries = None
        self._run_later = self._lock = self._unlock_callback = self._on_end = self._begin = None
        self._waiting_for = 0
        self._unlocked = False

    # -- public state --------------------------------------------------------
    @property
    def tasks(self) -> set[TukioTask]:
        """The tasks created so far (the latest attempt of each)."""
        return set(self.tasks_by_id.values())

    @property
    def lock(self) -> WorkflowLock:
        """The workflow's `WorkflowLock`: locked until it unlocks (skip-until-unlock)."""
        if self._lock is None:
            lock = self._lock = WorkflowLock()
            if self._unlocked:
                lock.release()
            elif self._unlock_callback is not None:
                lock.add_release_callback(self._unlock_callback)
                self._unlock_callback = None
        return self._lock

    def locked(self) -> bool:
        """True until the workflow unlocks (as ``lock.locked()``, without making the lock)."""
        return not self._unlocked

    def on_unlock(self, callback: Callable[[], None]) -> None:
        """Call `callback()` when the workflow unlocks (at once if it has).

        As ``lock.add_release_callback``, without making the lock for one callback.
        """
        if self._lock is not None or (self._unlock_callback is not None and not self._unlocked):
            self.lock.add_release_callback(callback)
        elif self._unlocked:
            callback()
        else:
            self._unlock_callback = callback

    def on_end(self, callback: Callable[[Workflow], Any]) -> None:
        """Call `callback(workflow)` as the workflow ends, once its end is recorded.

        It runs before the done callbacks and costs no turn of the loop (the
        engine's bookkeeping uses it); a second call replaces the callback.
        If the workflow has already ended, it is called on the next turn.
        """
        if self.done():
            self._loop.call_soon(callback, self)
        else:
            self._on_end = callback

    def _release_lock(self) -> None:
        if self._unlocked:
            return
        self._unlocked = True
        if self._lock is not None:
            self._lock.release()
        elif self._unlock_callback is not None:
            callback, self._unlock_callback = self._unlock_callback, None
            callback()

    @property
    def timed_out(self) -> bool:
        """True once the workflow's timeout expired."""
        return self._life is State.TIMING_OUT or self._life is State.TIMED_OUT

    @property
    def uid(self) -> str:
        """The execution id (a rescued workflow takes the one of its report)."""
        return self._uid

    @uid.setter
    def uid(self, uid: str) -> None:
        self._uid = uid
        self._topics = None

    @property
    def exec_topics(self) -> tuple[str, str]:
        """The two topics this workflow's execution events go to (made on first use)."""
        if self._topics is None:
            self._topics = workflow_exec_topics(self._uid)
        return self._topics

    @property
    def future_state(self) -> FutureState:
        """The workflow's state as a `FutureState`."""
        return FUTURE_STATE[self._life]

    @staticmethod
    def current_workflow(loop: asyncio.AbstractEventLoop | None = None) -> Workflow | None:
        """Return the workflow of the task running now, or None."""
        wf = creating()  # in a holder's __init__
        if wf is None:
            wf = getattr(asyncio.current_task(), "workflow", None)
        return wf if isinstance(wf, Workflow) else creating_for.get()

    def _move(self, new: State) -> None:
        self._life = check_move(self._uid, self._life, new)

    def _check_new(self) -> None:
        if self._life is not State.CREATED:
            raise RuntimeError(
                f"workflow {self._uid} was already started (cannot go from {self._life.value!r} to 'running')"
            )

    # -- running -------------------------------------------------------------
    def run(self, event_or_dict: Event | dict[str, Any] | Any) -> Written:
        """Start the root task with `event_or_dict`.

        The root starts once the recorder has recorded the triggering data
        (at once without a store). A workflow that waits for aborted ones
        (`run_after`) records its triggering data now (see `begin_recorded`),
        and starts its root once they have all ended.

        Returns:
            What resolves once the root task was started (or could not be).

        Raises:
            RuntimeError: the workflow was already started (or ended).
        """
        if self._life is not State.CREATED:
            self._check_new()
        if self._waiting_for:
            if self._run_later is not None:
                raise RuntimeError(f"workflow {self._uid} was already started (it waits for aborted workflows)")
            if self.recorder is not NULL_RECORDER:  # write-ahead of the begin, whatever the wait
                self._begin = self.recorder.workflow_begin(self, _payload(event_or_dict))
            self._run_later = (event_or_dict, Written())
            return self._run_later[1]
        return self._go(event_or_dict)

    @property
    def begin_recorded(self) -> Written:
        """What resolves once `run()` had the triggering data recorded (durable with a store).

        Already resolved before `run()` and when nothing records the workflow.
        """
        return self._begin if self._begin is not None else WRITTEN

    def _go(self, event_or_dict: Event | dict[str, Any] | Any) -> Written:
        """Start the root once the begin is recorded (recorded now unless `run()` recorded it already)."""
        self._start = time.time()
        data = Event(event_or_dict) if isinstance(event_or_dict, dict) else event_or_dict
        payload = _payload(data)
        self._emit(WorkflowExecState.begin, payload)
        if self._plan.root is None:
            self._error = self._plan.error
            log.error("[%s] workflow %s cannot run: %s", self._uid, self.template.uid, self._error)
            self._finish()
            return WRITTEN
        if self._life is State.CREATED:  # an allowed move (a listener of 'workflow-begin' may have moved it)
            self._life = State.RUNNING
        else:
            self._move(State.RUNNING)
        if self.template.timeout is not None:
            self._arm_timeout()
        self._open += 1
        if self.recorder is NULL_RECORDER:  # nothing to record: start the root now
            self._begun(data, None)
            return WRITTEN
        begun = self._begin
        if begun is None:
            begun = self._begin = self.recorder.workflow_begin(self, payload)
        begun.then(self._begun, data)
        return begun

    def run_after(self, previous: Sequence[Workflow]) -> None:
        """Cancel `previous`; `run()` starts this workflow once they have all ended.

        The 'abort-running' policy (see `tukio.workflow.overrun`).
        """
        for old in previous:
            if not old.done():
                self._waiting_for += 1
                old.add_done_callback(self._previous_ended)
                old.cancel()

    def _previous_ended(self, _: asyncio.Future[Any]) -> None:
        self._waiting_for -= 1
        if self._waiting_for or self._run_later is None:
            return
        data, written = self._run_later
        self._run_later = None
        if self._life is State.CREATED:
            self._go(data).then(_resolve, written)
        else:  # cancelled meanwhile
            written.resolve()

    def _begun(self, data: Any, error: BaseException | None) -> None:
        """The triggering data is recorded: start the root (write-ahead)."""
        if error is not None:
            self._error = error
        elif not self._life.halting:
            assert self._plan.root is not None
            root = self._start_task(self._plan.root, data)
            if root is not None and self._life is State.SUSPENDED:
                root.suspend()
        self._close()

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
        self._check_new()
        rescue = plan_rescue(self._plan, report)
        self._move(State.RUNNING)
        self.uid = rescue.exec_id
        self._start = rescue.start.timestamp() if rescue.start is not None else time.time()
        self._kept = rescue.kept
        if rescue.attempts:
            self._retries = Retries(rescue.attempts)
        self._arm_timeout()
        log.info(
            "[%s] workflow rescued: %d task(s) kept, %d restarted", self._uid, len(rescue.kept), len(rescue.to_start)
        )
        self.recorder.workflow_rescued(self, rescue.kept)
        self._open += 1  # nothing ends the workflow while it restarts its tasks (some may end at once, eagerly)
        for item in rescue.to_start:
            self._start_task(self._plan.by_id[item.task_id], self._rescue_event(item))
        for item in rescue.to_deliver:
            task = self.tasks_by_id.get(item.task_id)
            if task is not None and not task.done():
                task.queue.put_nowait(self._rescue_event(item))
        self._close()

    def _rescue_event(self, item: Start) -> Any:
        if not isinstance(item.data, dict):
            return item.data
        if item.parent_id is None:
            return Event(item.data)
        return Event(item.data, source=self.source(item.parent_id, item.parent_exec_id))

    def _arm_timeout(self) -> None:
        if self.template.timeout is not None:
            self._timeout = TimeoutHandle(self, self.template.timeout)
            self._timeout.start()

    def _start_task(self, template: TaskTemplate, data: Any) -> TukioTask | None:
        try:
            task = start_bound(
                template.name, data, template.config, self._loop, template, self, self._eager, _task_ended
            )
        except Exception as exc:
            self._creation_failed(template, data, exc)
            return None
        self.tasks_by_id[template.uid] = task
        self._open += 1
        if self.recorder is not NULL_RECORDER:
            self.recorder.task_started(self, template.uid)
        # A task started eagerly may have ended in its first step: its end is
        # handled here and now (successors, maybe the workflow's end), as it
        # would have been in its last step; past the nesting bound, next turn.
        # (Started otherwise, it was given `_task_ended` at creation.)
        if self._eager and not (task.ended() and end_now(task, _task_ended)):
            task.on_ended(_task_ended)
        return task

    def _creation_failed(self, template: TaskTemplate, data: Any, exc: Exception) -> None:
        error = describe_error(exc)
        log.error("[%s] task %s (%s) could not be created: %s", self._uid, template.uid, template.name, error)
        if self._failures is None:
            self._failures = {}
        self._failures[template.uid] = failure_entry(data.data if isinstance(data, Event) else data, error)
        self._emit(TaskExecState.error, {"exception": exc}, template.uid)
        self.recorder.task_started(self, template.uid)

    # -- a task ended -------------------------------------------------------------
    def _task_ended(self, task: TukioTask) -> None:
        """Retry `task`, or record its end and go on once that is written."""
        if task is self._unlock_task:
            # Unlocked as the task ends, not once its end is durable (skip-until-unlock).
            self._release_lock()
        template: TaskTemplate = task.template  # type: ignore[assignment]
        running = self._life is _RUNNING
        if running and template.retry is not None:
            exc = self._retry_error(task)
            if exc is not None:
                self._schedule_retry(task, exc)
                return
        if self.recorder is NULL_RECORDER:
            if running and task._final_state is _FINISHED and self._failures is None:
                # The usual end, in one step: nothing to record, nothing to wait for.
                self._flow(task)
                self._open -= 1  # `_close()`, inline: the path of every task
                if not self._open:
                    self._closed()
            else:
                self._task_recorded(task, None)
            return
        written = self.recorder.task_ended(self, template.uid)
        if written is WRITTEN:  # nothing to wait for: go on now
            self._task_recorded(task, None)
        else:
            written.then(_task_recorded, task)

    def _task_recorded(self, task: TukioTask, error: BaseException | None) -> None:
        """The end of `task` is recorded: start its successors (or keep it for later)."""
        tid = task.template.uid  # type: ignore[union-attr]
        if error is not None:
            self._fail_task(tid, describe_error(error))
        state = task.future_state
        if state is FutureState.suspended:
            if self._suspended is None:
                self._suspended = {}
            self._suspended[tid] = task
        elif state in _FLOWING and (self._failures is None or tid not in self._failures):
            if self._life is State.RUNNING:
                self._flow(task)
            elif self._life is State.SUSPENDED:
                self._defer(task)
        self._close()

    def _defer(self, task: TukioTask) -> None:
        """Keep `task`, ended while the workflow is suspended, to start its successors on resume."""
        if self._deferred is None:
            self._deferred = []
        self._deferred.append(task)

    def _fail_task(self, tid: str, error: str) -> None:
        """Fail task `tid` in the report (its recorder refused it); its branch stops."""
        if self._failures is None:
            self._failures = {}
        self._failures[tid] = {"state": FutureState.exception.value, "outputs": None, "error": error}

    def _close(self) -> None:
        """One thing the workflow waited for is over; end it when nothing is left."""
        self._open -= 1
        if self._open == 0:
            self._closed()

    def _closed(self) -> None:
        """Nothing is left to wait for: end, unless suspended with tasks to restart."""
        if not (self._life is State.SUSPENDED and (self._suspended or self._deferred)):
            self._finish()

    def _flow(self, task: TukioTask) -> None:
        """Start (or feed) the successors of `task` with its outputs."""
        tid = task.template.uid  # type: ignore[union-attr]
        chosen = self._next.pop(tid, None) if self._next else None
        successors = chosen if chosen is not None else self._plan.successors[tid]
        if not successors:
            return
        outputs = task.outputs
        is_dict = isinstance(outputs, dict)
        tasks, by_id = self.tasks_by_id, self._plan.by_id
        for succ in successors:
            running = tasks.get(succ)
            if running is None:
                if self._failures is None or succ not in self._failures:
                    self._start_task(by_id[succ], Event.with_source_of(outputs, task) if is_dict else outputs)
            elif not running.done():
                holder = running.holder
                if is_dict and type(holder) is JoinTask:
                    # tukio's own join takes its parents' data directly; a subclass (which may
                    # read its queue itself) gets the event in its queue, as any other task.
                    holder.parent_ended(tid, outputs)
                else:
                    running.queue.put_nowait(Event.with_source_of(outputs, task) if is_dict else outputs)

    # -- retries (see tukio.workflow.retries) ----------------------------------
    def will_retry(self, task: TukioTask) -> bool:
        """True when `task`, which has just ended, is to be run again by its retry policy."""
        return self._life is State.RUNNING and self._retry_error(task) is not None

    def _retry_error(self, task: TukioTask) -> BaseException | None:
        if self._retries is None:
            return retry_error(task, 0)
        return self._retries.error_of(task)

    def _schedule_retry(self, task: TukioTask, exc: BaseException) -> None:
        # The ended task's place in `_open` passes to its retry.
        if self._retries is None:
            self._retries = Retries()
        self._retries.schedule(task, exc, self._retry)
        self.recorder.task_retrying(self, task.template.uid)  # type: ignore[union-attr]

    def _retry(self, task: TukioTask) -> None:
        self._start_task(task.template, task.argument)  # type: ignore[arg-type]
        self._close()

    def _drop_retries(self) -> list[TukioTask]:
        if self._retries is None:
            return []
        tasks = self._retries.drop()
        self._open -= len(tasks)
        return tasks

    # -- ending ------------------------------------------------------------------
    def _finish(self) -> None:
        if self.done():
            return
        if self._life is State.RUNNING and self._error is None:
            # The usual end, first (running -> finished is an allowed move).
            self._life = State.FINISHED
            self.set_result(set(self.tasks_by_id.values()))
            state = FutureState.finished
        else:
            self._settle()
            state = FUTURE_STATE[self._life]
        self._end = time.time()
        if self._timeout is not None:
            self._timeout.cancel()
        if not self._unlocked:
            self._release_lock()
        if log.isEnabledFor(logging.INFO):
            log.info("[%s] workflow %s ended: %s", self._uid, self.template.uid, state)
        # The original's contents: the exception for 'workflow-error'; for
        # 'workflow-end', None, or {'cancel': True} when cancelled (or timed out).
        error = None
        if state is FutureState.finished:
            self._emit(WorkflowExecState.end, None)
        elif state is FutureState.exception:
            assert self._error is not None
            error = describe_error(self._error)
            self._emit(WorkflowExecState.error, self._error)
        elif state is FutureState.cancelled or state is FutureState.timeout:
            self._emit(WorkflowExecState.end, {"cancel": True})
        else:
            self._emit(WorkflowExecState.end, None)
        if self.recorder is not NULL_RECORDER:
            self.recorder.workflow_end(self, state._value_, error)
        if self._on_end is not None:
            self._on_end(self)

    def _settle(self) -> None:
        """End the future as the workflow's life says (every end but the usual one)."""
        match self._life:
            case State.CANCELLING:
                self._move(State.CANCELLED)
                asyncio.Future.cancel(self)  # the future itself (our cancel() cancels the tasks)
            case State.TIMING_OUT:
                self._move(State.TIMED_OUT)
                asyncio.Future.cancel(self)  # the future itself (our cancel() cancels the tasks)
            case _ if self._error is not None:
                self._move(State.FAILED)
                self.set_exception(self._error)
            case _:
                self._move(State.FINISHED)
                self.set_result(set(self.tasks_by_id.values()))

    def __repr__(self) -> str:
        return f"<Workflow {self._uid} template={self.template.uid!r} {self.future_state.value}>"


def _resolve(written: Written, error: BaseException | None) -> None:
    written.resolve(error)


def _payload(data: Any) -> Any:
    """What the recorder keeps of the triggering data (an Event's data)."""
    return data.data if isinstance(data, Event) else data


def _task_recorded(task: TukioTask, error: BaseException | None) -> None:
    task.workflow._task_recorded(task, error)  # type: ignore[union-attr]


def _task_ended(task: TukioTask) -> None:
    # One function for every task (a bound method would be one more object per task).
    task.workflow._task_ended(task)  # type: ignore[union-attr]
