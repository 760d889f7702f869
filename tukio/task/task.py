"""`TukioTask`: an asyncio task that knows its template, workflow and data."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import sys
import time
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

from tukio._report import utc
from tukio.broker import EXEC_TOPIC, Broker, get_broker
from tukio.errors import SkipTask, TukioTaskError
from tukio.event import Event, EventSource, data_of
from tukio.task._events import receive
from tukio.task.holder import TaskHolder
from tukio.task.states import TaskExecState
from tukio.utils import FutureState, Listen, TimeoutHandle, new_uid

if TYPE_CHECKING:
    from tukio.task.template import TaskTemplate
    from tukio.workflow.workflow import Workflow

__all__ = ["TukioTask", "TukioTaskError"]

# asyncio.Task takes a `context` from Python 3.11 on.
_OWN_CONTEXT = sys.version_info >= (3, 11)

# The event types a task emits, as plain strings (an enum's .value costs a lookup each time).
_BEGIN, _END, _SKIP, _ERROR, _TIMEOUT = (
    s.value
    for s in (TaskExecState.begin, TaskExecState.end, TaskExecState.skip, TaskExecState.error, TaskExecState.timeout)
)

log = logging.getLogger(__name__)

_CREATED = inspect.CORO_CREATED
_now = time.time
_FINISHED = FutureState.finished


def shallow_copy(value: Any) -> Any:
    """Copy dicts, lists and sets one level deep; give other values back as is."""
    if isinstance(value, Event):
        return dict(value.data)
    if isinstance(value, (dict, list, set)):
        return value.copy()
    return value


async def _run_to_end(task: TukioTask, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a workflow task's coroutine, then record the task's end in the same step.

    The end (state, outputs, 'task-end', the workflow starting the successors)
    is handled here, in the task's last step, rather than in a done callback:
    that saves one turn of the loop per task. The task is not `done()` yet
    while this runs, but its end is known (`ended()`), and `cancel()` no
    longer applies to it.
    """
    try:
        result = await coro
    except BaseException as exc:
        task._end_with(None, exc)
        raise
    task._end_with(result, None)
    return result


_RUN_TO_END = _run_to_end.__code__


def _retrieve(task: asyncio.Future[Any]) -> None:
    task.exception()


_new_task = asyncio.Task.__new__
_init_task = asyncio.Task.__init__


class TukioTask(asyncio.Task):  # type: ignore[type-arg]
    """An asyncio task running a registered tukio coroutine.

    Created by `new_task`, by a workflow, or by `tukio_factory` for any
    registered coroutine scheduled on a loop that uses it.
    """

    # What every task sets lives in slots, not in an instance dict (asyncio's
    # Task keeps its dict, made only when a rarely-set attribute is).
    __slots__ = (
        "_argument",
        "_end",
        "_ended",
        "_error",
        "_final_state",
        "_inputs",
        "_outputs",
        "_start",
        "template",
        "workflow",
    )
    template: TaskTemplate | None
    workflow: Workflow | None
    _argument: Any
    _inputs: Any
    _outputs: Any
    _start: float
    _end: float | None
    _final_state: FutureState | None  # set once the task has ended
    _error: BaseException | None  # what ended it, unless it was cancelled
    _must_cancel: bool  # asyncio.Task's own: cancel() was called while it was not waiting
    _ended: Callable[[TukioTask], Any] | None

    # Class-level defaults keep rarely-set attributes out of each instance.
    holder: Any = None
    committed = False
    _timed_out = False
    _suspended = False
    _uid: str | None = None
    _queue: asyncio.Queue[Event] | None = None
    _source: EventSource | None = None
    _listening: tuple[str | None, ...] = ()

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        name: str | None = None,
        context: contextvars.Context | None = None,
        eager_start: bool = False,
        holder: Any = None,
    ) -> None:
        # A task made by a task factory (a workflow's tasks are made by `bound_task`).
        # Set before asyncio.Task.__init__: nothing may run before they exist.
        self._end = self._final_state = self._ended = self._outputs = self._error = None
        self._argument = self._inputs = self.template = self.workflow = None
        if holder is not None:
            self._hold(holder)
        self._start = time.time()
        # Its inputs and workflow are not set: it must not run before they are, so never eagerly.
        if _OWN_CONTEXT:
            if context is None:
                # One context for the task and its done callback (asyncio would copy a second one).
                context = contextvars.copy_context()
            # (mypy checks against 3.10, whose Task takes no context.)
            super().__init__(coro, loop=loop, name=name, context=context)  # type: ignore[call-arg]
        else:
            super().__init__(coro, loop=loop, name=name)
        # It runs the loop's coroutine as is: its end is recorded by a done callback.
        self.add_done_callback(TukioTask._on_done, context=context)

    def _hold(self, holder: Any) -> None:
        self.holder = holder
        if isinstance(holder, TaskHolder):
            holder.attach(self)
        else:
            holder.queue = self.queue

    # -- identity and data -------------------------------------------------
    @property
    def uid(self) -> str:
        """The holder's uid, else a uuid4 string made on first use."""
        if self._uid is None:
            uid = getattr(self.holder, "uid", None)
            self._uid = uid if isinstance(uid, str) else new_uid()
        return self._uid

    @property
    def inputs(self) -> Any:
        """The data the task was started with (an Event's data, copied)."""
        return self._inputs

    @inputs.setter
    def inputs(self, data: Any) -> None:
        self._inputs = shallow_copy(data)

    @property
    def outputs(self) -> Any:
        """What the task hands to its successors (a copy of its result)."""
        return self._outputs

    @outputs.setter
    def outputs(self, data: Any) -> None:
        self._outputs = shallow_copy(data)

    @property
    def argument(self) -> Any:
        """The value the coroutine was called with (an Event, usually)."""
        return self._argument

    @property
    def queue(self) -> asyncio.Queue[Event]:
        """Events received while running (made on first use)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._queue

    @property
    def timed_out(self) -> bool:
        """True once the task's timeout expired."""
        return self._timed_out

    @property
    def future_state(self) -> FutureState:
        """The task's state as a `FutureState`."""
        if self._final_state is not None:
            return self._final_state
        return FutureState.of(self, timed_out=self._timed_out, suspended=self._suspended)

    @property
    def event_source(self) -> EventSource:
        """The `EventSource` naming this task and its workflow (made on first use)."""
        if self._source is None:
            wf = self.workflow
            tid = self.template.uid if self.template is not None else None
            self._source = wf.source(tid, self.uid) if wf is not None else EventSource(None, None, tid, self.uid)
        return self._source

    def source_ids(self) -> tuple[str | None, str | None]:
        """Return the workflow execution id and task template id of `event_source`, without making it."""
        if self._source is not None:
            return self._source.workflow_exec_id, self._source.task_template_id
        wf = self.workflow
        return (wf.uid if wf is not None else None), (self.template.uid if self.template is not None else None)

    def in_progress(self) -> bool:
        """True while the task has not ended."""
        return self._final_state is None and not self.done()

    def ended(self) -> bool:
        """True once the task's end is recorded (its state, end time and outputs are final).

        A workflow task's end is recorded in its own last step, just before
        it is `done()`.
        """
        return self._final_state is not None

    def times(self) -> tuple[float, float | None]:
        """The task's start and end as `time.time()` values (the end is None until it has ended)."""
        return self._start, self._end

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the task (None while it runs, or when it finished or was cancelled)."""
        return self._error

    async def data_received(self, event: Event) -> None:
        """Put `event` in the task's queue (a broker handler); see `deliver`."""
        receive(self, event)

    def deliver(self, event: Event) -> None:
        """Put `event` in the task's queue (a plain-callable handler).

        In a workflow that journals the events of its tasks (a store that
        `keeps_events`), the event goes in once it is recorded, in order.
        """
        receive(self, event)

    # -- control -----------------------------------------------------------
    def cancel(self, msg: Any = None) -> bool:
        """Cancel the task; return False if it had already ended.

        As `asyncio.Task.cancel`, except that a task whose end is recorded
        (see `ended`) is not cancelled even if it is not `done()` yet.
        """
        if self._final_state is not None:
            return False
        coro = self.get_coro()
        if inspect.iscoroutine(coro) and coro.cr_code is _RUN_TO_END and inspect.getcoroutinestate(coro) == _CREATED:
            # Cancelled before its first step: the coroutine will never run,
            # so its end is recorded by a done callback, as for a factory's task.
            body = coro.cr_frame.f_locals["coro"]  # type: ignore[union-attr]
            cancelled = super().cancel(msg)
            body.close()  # it will never be awaited (no warning saying so)
            self.add_done_callback(TukioTask._on_done)
            return cancelled
        return super().cancel(msg)

    def timeout(self) -> bool:
        """End the task as timed out; return False if it had already ended."""
        if self._final_state is not None or self.done():
            return False
        self._timed_out = True
        return self.cancel()

    def suspend(self) -> bool:
        """Cancel the task and mark it suspended; return False if it had ended."""
        if self._final_state is not None or self.done():
            return False
        self._suspended = True
        return self.cancel()

    # -- events and reports ------------------------------------------------
    def _broker(self) -> Broker:
        wf = self.workflow
        return wf.broker if wf is not None else get_broker(self.get_loop())

    def listened(self) -> bool:
        """True when someone may listen to this task's execution events (build them only then)."""
        wf = self.workflow
        if wf is not None:
            return wf.broker.listened()  # one cheap check; `emit` looks at the topics
        return get_broker(self.get_loop()).has_listeners((EXEC_TOPIC,))

    def emit(self, event_type: TaskExecState | str, content: Any) -> None:
        """Dispatch an execution event of this task on its workflow's topics."""
        kind = event_type if type(event_type) is str else str(event_type)
        wf = self.workflow
        if wf is not None:
            wf.emit(kind, content, self)
            return
        broker = get_broker(self.get_loop())
        if broker.has_listeners((EXEC_TOPIC,)):
            broker.dispatch({"type": kind, "content": content}, (EXEC_TOPIC,), self.event_source)

    def dispatch_progress(self, data: Any, event_type: str | None = None) -> None:
        """Dispatch a progress event ('task-progress' unless told otherwise)."""
        self.emit(event_type or TaskExecState.progress, data)

    def as_dict(self) -> dict[str, Any]:
        """Return ``{'id','start','end','state','inputs','outputs'}``.

        A task whose coroutine has returned but whose end is not recorded yet
        (a task factory's task whose done callback has not run) is still
        'pending': an ended state always comes with its end time and outputs.
        """
        state = self._final_state
        if state is None:
            state = FutureState.pending if self.done() else self.future_state
        return {
            "id": self.uid,
            "start": utc(self._start),
            "end": utc(self._end),
            "state": state.value,
            "inputs": self._inputs,
            "outputs": self._outputs,
        }

    def _arm(self, template: TaskTemplate | None) -> None:
        """Start the template's timeout and listen to its topics."""
        if template is not None:
            if template.timeout is not None:
                TimeoutHandle(self, template.timeout).start()
            if template.topics != [] and not self.done():  # [] means: listen to nothing
                self._listen(template)

    def _listen(self, template: TaskTemplate) -> None:
        mode = template.listen
        if mode is Listen.nothing:
            return
        topics: tuple[str | None, ...] = (None,) if mode is Listen.everything else tuple(template.topics or ())
        broker = self._broker()
        for topic in topics:
            broker.register(self.deliver, topic)
        self._listening = topics

    def on_ended(self, callback: Callable[[TukioTask], Any]) -> None:
        """Call `callback(task)` once the task has ended and its outputs are set.

        A workflow task calls it in its own last step, so it costs no extra
        turn of the loop (a workflow uses it to start the successors). If the
        task has already ended (an eager start that ran to its end), it is
        called on the next turn, in the task's context.
        """
        if self._final_state is None:
            self._ended = callback
        else:
            self.get_loop().call_soon(callback, self, context=self.get_context())  # type: ignore[attr-defined]

    def _on_done(self) -> None:
        """The done callback of a task whose end its coroutine could not record."""
        if self._final_state is not None:
            return
        if self.cancelled():
            self._end_with(None, asyncio.CancelledError())
        else:
            exc = self.exception()
            self._end_with(None if exc is not None else self.result(), exc)

    def _end_with(self, result: Any, exc: BaseException | None) -> None:
        """Record the end (the coroutine returned `result` or raised `exc`), then tell `on_ended`'s callback.

        It never raises: a failure here is the loop's to report, the task's
        own outcome stays what its coroutine made it.
        """
        try:
            if exc is None and not self._must_cancel and not self._timed_out and not self._listening:
                # The usual end, the one to make cheap: finished, nothing to unregister.
                self._end = _now()
                self._final_state = _FINISHED
                self._outputs = self._inputs if result is None else shallow_copy(result)
                wf = self.workflow
                if wf.broker.listened() if wf is not None else self.listened():
                    self.emit(_END, self._outputs)
            else:
                if exc is None and self._must_cancel:
                    # Cancelled while running its last step: asyncio ends it cancelled despite the return.
                    exc = asyncio.CancelledError()
                self._settle(result, exc)
            if self._ended is not None:
                self._ended(self)
        except Exception as error:
            # The task is named in the message only: given as "task" or "future", asyncio (3.12+)
            # would run the handler in this task's context, which is entered right now.
            self.get_loop().call_exception_handler(
                {"message": f"{self._log_prefix()}: recording its end failed", "exception": error}
            )

    def _end_state(self, exc: BaseException | None) -> FutureState:
        """The final state of a task whose coroutine raised `exc` (None: it returned)."""
        if self._timed_out:
            return FutureState.timeout
        if exc is None:
            return FutureState.finished
        if isinstance(exc, asyncio.CancelledError):
            return FutureState.suspended if self._suspended else FutureState.cancelled
        return FutureState.skipped if isinstance(exc, SkipTask) else FutureState.exception

    def _settle(self, result: Any, exc: BaseException | None) -> None:
        """Record the end: time, final state, outputs, and the execution event."""
        self._end = time.time()
        if self._listening:
            broker = self._broker()
            for topic in self._listening:
                broker.unregister(self.deliver, topic)
        state = self._final_state = self._end_state(exc)
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            self._error = exc
            if not self.done():
                # Its end is recorded (and the error logged) here, so asyncio must not
                # log it again as "never retrieved": retrieve it once it is set.
                self.add_done_callback(_retrieve)
        match state:
            case FutureState.finished:
                self._outputs = self._inputs if result is None else shallow_copy(result)
                self.emit(_END, self._outputs)
            case FutureState.skipped:
                self._outputs = self._inputs
                log.info("%s skipped: %s", self._log_prefix(), exc)
                self.emit(_SKIP, self._outputs)
            case FutureState.exception:
                if isinstance(exc, TukioTaskError):
                    self._outputs = shallow_copy(exc.outputs)
                    log.warning("%s failed: %s", self._log_prefix(), exc)
                    self.emit(_ERROR, self._outputs)
                else:
                    assert exc is not None
                    # An attempt to be retried gets one log line, from the retry (no traceback).
                    if not self._will_retry():
                        log.error("%s raised %r", self._log_prefix(), exc, exc_info=(type(exc), exc, exc.__traceback__))
                    self.emit(_ERROR, {"exception": exc})
            case FutureState.timeout:
                outputs = self._teardown()
                self._outputs = self._inputs if outputs is None else shallow_copy(outputs)
                if not self._will_retry():
                    log.info("%s timed out", self._log_prefix())  # designed: a state, not a fault
                self.emit(_TIMEOUT, self._outputs)
            case _:  # cancelled or suspended
                outputs = self._teardown()
                if outputs is not None:
                    self._outputs = shallow_copy(outputs)

    def _will_retry(self) -> bool:
        """True when the task's workflow will run it again (its retry policy says so)."""
        wf = self.workflow
        return wf is not None and self.template is not None and self.template.retry is not None and wf.will_retry(self)

    def _teardown(self) -> Any:
        teardown = getattr(self.holder, "teardown", None)
        if not callable(teardown):
            return None
        try:
            return teardown()
        except Exception:
            log.exception("%s teardown failed", self._log_prefix())
            return None

    def _log_prefix(self) -> str:
        wf = self.workflow
        tid = self.template.uid if self.template is not None else self.uid
        return f"[{wf.uid}] task {tid}" if wf is not None else f"task {tid}"

    def __repr__(self) -> str:
        name = self.template.name if self.template is not None else "?"
        return f"<TukioTask {name} {self.future_state.value}>"


def bound_task(
    coro: Coroutine[Any, Any, Any],
    data: Any,
    template: TaskTemplate | None,
    workflow: Workflow | None,
    loop: asyncio.AbstractEventLoop,
    holder: Any = None,
    eager: bool = False,
    ended: Callable[[TukioTask], Any] | None = None,
) -> TukioTask:
    """Create the `TukioTask` running `coro`, bound to its template and workflow, and emit 'task-begin'.

    The path of every workflow task (see `start_task`): the task is built
    field by field and asyncio's own initialiser called once, which costs a
    fraction of going through `TukioTask.__init__`. Its coroutine is wrapped
    to record its end in its last step. With `eager` (Python 3.12+), it runs
    its first step now. `ended` is its `on_ended` callback. If the task
    cannot be made, `coro` is closed (it will never run).
    """
    task: TukioTask = _new_task(TukioTask)
    # Set before asyncio's init: nothing may run before they exist.
    task._end = task._final_state = task._outputs = task._error = None
    # An eager task may end in its first step, before it is returned: its caller handles that end.
    task._ended = None if eager else ended
    wrapped = None
    scheduled = False
    try:
        if holder is not None:
            task._hold(holder)
        task._start = _now()
        task.workflow = workflow
        task._argument = data
        inputs = data_of(data)
        task._inputs = inputs.copy() if type(inputs) is dict else shallow_copy(inputs)
        task.template = template
        # Only the broker is asked (one call, not two) whether 'task-begin' is heard.
        broker = workflow.broker if workflow is not None else None
        wrapped = _run_to_end(task, coro)
        if eager:
            # Announced first: it runs its first step now.
            if task.listened():
                task.emit(_BEGIN, task._inputs)
            _init_task(task, wrapped, loop=loop, eager_start=True)  # type: ignore[call-arg]
        else:
            _init_task(task, wrapped, loop=loop)
        scheduled = True
        # A timeout to arm, or topics to listen to (None: every topic; [] or no template: none).
        if template is not None and (template.timeout is not None or template.topics is None or template.topics):
            task._arm(template)
        if not eager and (broker.listened() if broker is not None else task.listened()):
            task.emit(_BEGIN, task._inputs)
    except BaseException:
        # The caller is told the task could not be made: its end is nobody's to handle.
        task._ended = None
        if wrapped is not None and not scheduled:
            wrapped.close()  # never to run (once scheduled, it runs and ends on the closed `coro`)
        coro.close()
        raise
    return task
