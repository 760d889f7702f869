"""Tukio tasks: `new_task`, how a task ends, reports, events and the task factory."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import re
import sys
import types
import uuid
from collections.abc import AsyncIterator, Callable, Generator
from datetime import datetime, timezone
from typing import Any

import pytest
from support import settle, until

from tukio import EXEC_TOPIC, Event, EventSource, get_broker
from tukio.errors import UnknownTaskName
from tukio.task import TaskHolder, TukioTask, TukioTaskError, new_task, tukio_factory
from tukio.task.factory import TaskExecState
from tukio.utils import FutureState, SkipTask

Registered = Callable[..., Any]
Names = Callable[[str], str]


class Recorder:
    """A global broker handler keeping every event."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def types(self) -> list[str]:
        return [e.data["type"] for e in self.events]

    def content(self, event_type: str) -> Any:
        [found] = [e.data["content"] for e in self.events if e.data["type"] == event_type]
        return found


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    broker = get_broker()
    broker.register(rec)
    yield rec
    broker.unregister(rec)


@pytest.fixture
async def factory() -> AsyncIterator[asyncio.AbstractEventLoop]:
    """The running loop with `tukio_factory` installed (and removed after)."""
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    loop.set_task_factory(tukio_factory)  # type: ignore[arg-type]
    yield loop
    loop.set_task_factory(previous)


def is_uuid4(value: Any) -> bool:
    return isinstance(value, str) and uuid.UUID(value).version == 4


# -- states and their values ---------------------------------------------------


def test_task_exec_state_values() -> None:
    assert TaskExecState.begin.value == "task-begin"
    assert TaskExecState.end.value == "task-end"
    assert TaskExecState.error.value == "task-error"
    assert TaskExecState.skip.value == "task-skip"
    assert TaskExecState.progress.value == "task-progress"
    assert TaskExecState.timeout.value == "task-timeout"
    assert TaskExecState("task-begin") is TaskExecState.begin
    assert str(TaskExecState.end) == "task-end"
    assert TaskExecState.end == "task-end"


# -- new_task ----------------------------------------------------------------


async def test_new_task_runs_a_coroutine_function(registered: Registered, task_name: Names) -> None:
    received: list[Any] = []

    async def double(data: Any) -> Any:
        received.append(data)
        return {"value": data["value"] * 2}

    name = task_name("double")
    registered(name, double)
    task = new_task(name, data={"value": 21})
    assert isinstance(task, TukioTask)
    assert task.holder is None
    assert is_uuid4(task.uid)
    assert task.uid == task.uid  # stable once made
    assert task.template is not None
    assert (task.template.name, task.template.config, task.template.timeout) == (name, {}, None)
    assert task.workflow is None
    assert task.committed is False
    assert task.timed_out is False
    assert task.in_progress()
    assert task.inputs == {"value": 21}
    assert await task == {"value": 42}
    assert not task.in_progress()
    # The coroutine is called with the data as given (SPEC, and the original).
    assert received == [{"value": 21}]
    assert task.outputs == {"value": 42}


async def test_a_function_task_reads_its_config_from_its_template(registered: Registered, task_name: Names) -> None:
    async def store(event: Event) -> Any:
        task = asyncio.current_task()
        assert isinstance(task, TukioTask)
        assert task.template is not None
        return {"saved": event.data["status"], "table": task.template.config["table"]}

    name = task_name("store")
    registered(name, store)
    config = {"table": "results"}
    task = new_task(name, data=Event({"status": 0}), config=config, timeout=5)
    assert await task == {"saved": 0, "table": "results"}
    assert task.template is not None
    assert task.template.config is config
    assert task.template.timeout == 5
    assert task.template.as_dict()["name"] == name


async def test_new_task_with_a_holder_and_config(registered: Registered, task_name: Names) -> None:
    class Holder(TaskHolder):
        async def execute(self, data: Any) -> Any:
            assert self.queue is asyncio.current_task().queue  # type: ignore[union-attr]
            return {"factor": self.config["factor"] * data}

    name = task_name("holder")
    registered(name, Holder, "execute")
    config = {"factor": 3}
    task = new_task(name, data=5, config=config, loop=asyncio.get_running_loop())
    assert isinstance(task.holder, Holder)
    assert task.holder.config is config
    assert task.uid == task.holder.uid
    assert is_uuid4(task.uid)
    assert await task == {"factor": 15}
    assert task.inputs == 5


async def test_holder_config_defaults_to_an_empty_dict(registered: Registered, task_name: Names) -> None:
    class Holder(TaskHolder):
        async def execute(self, data: Any) -> Any:
            return self.config

    name = task_name("holder-default")
    registered(name, Holder, "execute")
    task = new_task(name)
    assert await task == {}
    assert task.holder.report() is None
    assert task.holder.teardown() is None


async def test_any_class_can_hold_a_task(registered: Registered, task_name: Names) -> None:
    class Plain:
        def __init__(self, config: Any) -> None:
            self.config = config
            self.queue: Any = None

        async def run(self, data: Any) -> Any:
            task = asyncio.current_task()
            assert isinstance(task, TukioTask)
            return {"config": self.config, "queue_is_task_queue": self.queue is task.queue}

    name = task_name("plain-holder")
    registered(name, Plain, "run")
    task = new_task(name, data={}, config={"a": 1})
    assert await task == {"config": {"a": 1}, "queue_is_task_queue": True}
    assert is_uuid4(task.uid)  # the holder has no uid: the task makes one


async def test_holder_init_errors_propagate(registered: Registered, task_name: Names, recorder: Recorder) -> None:
    class Broken(TaskHolder):
        def __init__(self, config: Any = None) -> None:
            raise ValueError(f"bad config {config!r}")

        async def execute(self, data: Any) -> Any:  # pragma: no cover - never runs
            return data

    name = task_name("broken")
    registered(name, Broken, "execute")
    with pytest.raises(ValueError, match=re.escape("bad config {'x': 1}")):
        new_task(name, data={}, config={"x": 1})
    await settle()
    assert recorder.events == []


async def test_new_task_unknown_name(task_name: Names) -> None:
    name = task_name("nowhere")
    with pytest.raises(UnknownTaskName, match=name):
        new_task(name, data={})


async def test_wrong_coroutine_signature(registered: Registered, task_name: Names) -> None:
    async def two_args(data: Any, other: Any) -> Any:  # pragma: no cover - never runs
        return data

    class Holder(TaskHolder):
        async def execute(self) -> Any:  # pragma: no cover - never runs
            return None

    fn_name, holder_name = task_name("two-args"), task_name("no-arg")
    registered(fn_name, two_args)
    registered(holder_name, Holder, "execute")
    with pytest.raises(TypeError, match="positional argument"):
        new_task(fn_name, data={})
    with pytest.raises(TypeError, match="positional argument"):
        new_task(holder_name, data={})


async def test_inputs_are_a_copy(registered: Registered, task_name: Names) -> None:
    release = asyncio.Event()
    seen: list[Any] = []

    async def keep(data: Any) -> Any:
        seen.append(data)
        await release.wait()
        return {"done": True}

    name = task_name("inputs")
    registered(name, keep)
    data = {"a": 1}
    task = new_task(name, data=data)
    data["a"] = 2
    assert task.inputs == {"a": 1}
    release.set()
    await task
    # The coroutine got the data itself; only the recorded inputs are a copy.
    assert seen[0] is data
    assert task.inputs == {"a": 1}


async def test_inputs_of_an_event_are_its_data(registered: Registered, task_name: Names) -> None:
    seen: list[Any] = []

    async def keep(data: Any) -> Any:
        seen.append(data)
        return None

    name = task_name("event-inputs")
    registered(name, keep)
    event = Event({"a": 1}, topic="t", source=EventSource(task_template_id="up"))
    task = new_task(name, data=event)
    await task
    assert seen == [event]
    assert task.inputs == {"a": 1}
    assert task.inputs is not event.data
    assert task.argument is event


@pytest.mark.parametrize("data", [None, 3, "text", [1, 2]])
async def test_any_data_is_accepted(registered: Registered, task_name: Names, data: Any) -> None:
    async def echo(data: Any) -> Any:
        return {"got": data}

    name = task_name("any-data")
    registered(name, echo)
    task = new_task(name, data=data)
    assert await task == {"got": data}
    assert task.inputs == data


async def test_outputs_are_a_copy(registered: Registered, task_name: Names) -> None:
    result: dict[str, Any] = {"r": 1}

    async def produce(data: Any) -> Any:
        return result

    name = task_name("outputs")
    registered(name, produce)
    task = new_task(name, data={})
    assert await task is result
    result["r"] = 2
    assert task.outputs == {"r": 1}


async def test_none_result_passes_the_inputs_on(registered: Registered, task_name: Names, recorder: Recorder) -> None:
    async def nothing(data: Any) -> None:
        return None

    name = task_name("none")
    registered(name, nothing)
    task = new_task(name, data={"keep": "me"})
    assert await task is None
    assert task.outputs == {"keep": "me"}
    assert FutureState.get(task) is FutureState.finished
    await settle()
    assert recorder.content("task-end") == {"keep": "me"}


async def test_skip_task(registered: Registered, task_name: Names, recorder: Recorder) -> None:
    async def skipper(data: Any) -> Any:
        raise SkipTask("not today")

    name = task_name("skip")
    registered(name, skipper)
    task = new_task(name, data={"in": 1})
    with pytest.raises(SkipTask, match="not today"):
        await task
    assert task.as_dict()["state"] == "skipped"
    assert FutureState.get(task) is FutureState.skipped
    assert task.outputs == {"in": 1}
    await settle()
    assert recorder.types() == ["task-begin", "task-skip"]
    assert recorder.content("task-skip") == {"in": 1}


def test_skip_task_reason() -> None:
    assert SkipTask().reason is None
    assert str(SkipTask()) == "task skipped"
    assert SkipTask("why").reason == "why"


async def test_tukio_task_error_keeps_outputs(
    registered: Registered, task_name: Names, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    async def failing(data: Any) -> Any:
        raise TukioTaskError({"partial": True}, "half done")

    name = task_name("tukio-error")
    registered(name, failing)
    task = new_task(name, data={"in": 1})
    with caplog.at_level(logging.WARNING, logger="tukio.task.task"), pytest.raises(TukioTaskError, match="half done"):
        await task
    assert task.as_dict()["state"] == "exception"
    assert task.outputs == {"partial": True}
    await settle()
    assert recorder.types() == ["task-begin", "task-error"]
    assert recorder.content("task-error") == {"partial": True}
    assert any("half done" in r.getMessage() for r in caplog.records)


def test_tukio_task_error_defaults() -> None:
    error = TukioTaskError()
    assert error.outputs is None
    assert str(error) == "task failed"


async def test_other_exceptions(
    registered: Registered, task_name: Names, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    boom = RuntimeError("boom")

    async def failing(data: Any) -> Any:
        raise boom

    name = task_name("error")
    registered(name, failing)
    task = new_task(name, data={"in": 1})
    with caplog.at_level(logging.ERROR, logger="tukio.task.task"), pytest.raises(RuntimeError, match="boom"):
        await task
    assert task.as_dict()["state"] == "exception"
    assert task.outputs is None
    await settle()
    assert recorder.types() == ["task-begin", "task-error"]
    assert recorder.content("task-error") == {"exception": boom}
    assert any(r.levelno == logging.ERROR and r.exc_info is not None for r in caplog.records)


# -- timeouts, cancellation, suspension ---------------------------------------------


class Slow(TaskHolder):
    """Waits forever; its teardown returns what the config says."""

    async def execute(self, data: Any) -> Any:
        await asyncio.Event().wait()

    def teardown(self) -> Any:
        return self.config.get("teardown")


async def test_timeout_outputs_come_from_teardown(
    registered: Registered, task_name: Names, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    name = task_name("slow")
    registered(name, Slow, "execute")
    task = new_task(name, data={"in": 1}, config={"teardown": {"partial": 1}}, timeout=0.01)
    with caplog.at_level(logging.INFO, logger="tukio.task.task"), pytest.raises(asyncio.CancelledError):
        await task
    assert task.timed_out
    assert task.as_dict()["state"] == "timeout"
    assert FutureState.get(task) is FutureState.timeout
    assert task.outputs == {"partial": 1}
    await settle()
    assert recorder.types() == ["task-begin", "task-timeout"]
    assert recorder.content("task-timeout") == {"partial": 1}
    # A designed timeout is a state, not a fault: INFO, with the library's logger (no stderr by default).
    assert [(r.name, r.levelno) for r in caplog.records if "timed out" in r.getMessage()] == [
        ("tukio.task.task", logging.INFO)
    ]


async def test_timeout_outputs_default_to_inputs(registered: Registered, task_name: Names) -> None:
    async def forever(data: Any) -> Any:
        await asyncio.Event().wait()

    holder_name, fn_name = task_name("slow-holder"), task_name("slow-fn")
    registered(holder_name, Slow, "execute")
    registered(fn_name, forever)
    tasks = [new_task(holder_name, data={"in": 1}, timeout=0.01), new_task(fn_name, data={"in": 2}, timeout=0.01)]
    await asyncio.wait(tasks)
    assert [t.as_dict()["state"] for t in tasks] == ["timeout", "timeout"]
    assert [t.outputs for t in tasks] == [{"in": 1}, {"in": 2}]


async def test_a_failing_teardown_is_logged(
    registered: Registered, task_name: Names, caplog: pytest.LogCaptureFixture
) -> None:
    class BadTeardown(Slow):
        def teardown(self) -> Any:
            raise RuntimeError("teardown broke")

    name = task_name("bad-teardown")
    registered(name, BadTeardown, "execute")
    task = new_task(name, data={"in": 1}, timeout=0.01)
    with caplog.at_level(logging.ERROR, logger="tukio.task.task"):
        await asyncio.wait([task])
    assert task.as_dict()["state"] == "timeout"
    assert task.outputs == {"in": 1}
    assert any("teardown failed" in r.getMessage() for r in caplog.records)


async def test_a_task_done_before_its_timeout_is_not_timed_out(registered: Registered, task_name: Names) -> None:
    async def quick(data: Any) -> Any:
        return {"ok": True}

    name = task_name("quick")
    registered(name, quick)
    task = new_task(name, data={}, timeout=10)
    assert await task == {"ok": True}
    assert not task.timed_out
    assert task.timeout() is False
    assert task.as_dict()["state"] == "finished"


async def test_cancel_calls_teardown(registered: Registered, task_name: Names, recorder: Recorder) -> None:
    name = task_name("cancel")
    registered(name, Slow, "execute")
    task = new_task(name, data={"in": 1}, config={"teardown": {"cleaned": True}})
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.as_dict()["state"] == "cancelled"
    assert not task.timed_out
    assert task.outputs == {"cleaned": True}
    await settle()
    assert recorder.types() == ["task-begin"]


async def test_suspend(registered: Registered, task_name: Names) -> None:
    name = task_name("suspend")
    registered(name, Slow, "execute")
    task = new_task(name, data={"in": 1})
    await settle()
    assert task.as_dict()["state"] == "pending"
    assert task.suspend() is True
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.as_dict()["state"] == "suspended"
    assert task.suspend() is False


async def test_explicit_timeout_call(registered: Registered, task_name: Names) -> None:
    name = task_name("timeout-call")
    registered(name, Slow, "execute")
    task = new_task(name, data={"in": 1})
    await settle()
    assert task.timeout() is True
    await asyncio.wait([task])
    assert task.timed_out
    assert task.as_dict()["state"] == "timeout"


# -- reports, queues and events -------------------------------------------------------


async def test_as_dict(registered: Registered, task_name: Names) -> None:
    release = asyncio.Event()

    async def waiting(data: Any) -> Any:
        await release.wait()
        return {"out": 1}

    name = task_name("as-dict")
    registered(name, waiting)
    before = datetime.now(timezone.utc)
    task = new_task(name, data={"in": 1})
    running = task.as_dict()
    assert set(running) == {"id", "start", "end", "state", "inputs", "outputs"}
    assert running["id"] == task.uid
    assert running["state"] == "pending"
    assert running["end"] is None
    assert running["inputs"] == {"in": 1}
    assert running["outputs"] is None
    start = running["start"]
    assert isinstance(start, datetime)
    assert start.tzinfo is not None
    assert start.utcoffset() == timezone.utc.utcoffset(None)
    release.set()
    await task
    done = task.as_dict()
    assert done["state"] == "finished"
    assert done["outputs"] == {"out": 1}
    end = done["end"]
    assert isinstance(end, datetime)
    assert end.utcoffset() == timezone.utc.utcoffset(None)
    assert before <= start <= end <= datetime.now(timezone.utc)


async def test_events_of_a_task(registered: Registered, task_name: Names, recorder: Recorder) -> None:
    async def work(data: Any) -> Any:
        task = asyncio.current_task()
        assert isinstance(task, TukioTask)
        task.dispatch_progress({"step": 1})
        task.dispatch_progress({"step": 2}, event_type="custom-progress")
        return {"out": data["in"] + 1}

    name = task_name("events")
    registered(name, work)
    task = new_task(name, data={"in": 1})
    await task
    await settle()
    assert recorder.types() == ["task-begin", "task-progress", "custom-progress", "task-end"]
    assert [e.data["content"] for e in recorder.events] == [{"in": 1}, {"step": 1}, {"step": 2}, {"out": 2}]
    for event in recorder.events:
        assert event.topic == EXEC_TOPIC
        assert event.source == task.event_source
    assert task.template is not None
    assert task.event_source == EventSource(task_template_id=task.template.uid, task_exec_id=task.uid)


async def test_data_received_fills_the_queue(registered: Registered, task_name: Names) -> None:
    started = asyncio.Event()

    async def consumer(data: Any) -> Any:
        task = asyncio.current_task()
        assert isinstance(task, TukioTask)
        started.set()
        first = await task.queue.get()
        second = await task.queue.get()
        return [first.data, second.data]

    name = task_name("queue")
    registered(name, consumer)
    task = new_task(name, data={})
    await asyncio.wait_for(started.wait(), 1)
    assert isinstance(task.queue, asyncio.Queue)
    await task.data_received(Event({"n": 1}))
    task.deliver(Event({"n": 2}))
    assert await task == [{"n": 1}, {"n": 2}]


async def test_repr(registered: Registered, task_name: Names) -> None:
    async def work(data: Any) -> Any:
        return data

    name = task_name("repr")
    registered(name, work)
    task = new_task(name, data={})
    await task
    assert repr(task) == f"<TukioTask {name} finished>"


# -- the task factory ---------------------------------------------------------------


async def test_factory_makes_tukio_tasks_of_registered_functions(
    registered: Registered, task_name: Names, factory: asyncio.AbstractEventLoop
) -> None:
    async def work(data: Any) -> Any:
        return {"seen": data}

    name = task_name("factory-fn")
    registered(name, work)
    task = asyncio.create_task(work({"x": 1}))
    assert isinstance(task, TukioTask)
    assert task.holder is None
    assert await task == {"seen": {"x": 1}}
    assert task.outputs == {"seen": {"x": 1}}
    assert is_uuid4(task.uid)


async def test_factory_finds_the_holder_of_a_method(
    registered: Registered, task_name: Names, factory: asyncio.AbstractEventLoop
) -> None:
    class Holder(TaskHolder):
        async def execute(self, data: Any) -> Any:
            task = asyncio.current_task()
            assert isinstance(task, TukioTask)
            return {"holder_is_self": task.holder is self}

    name = task_name("factory-holder")
    registered(name, Holder, "execute")
    holder = Holder({"c": 1})
    task = factory.create_task(holder.execute({}))
    assert isinstance(task, TukioTask)
    assert task.holder is holder
    assert task.uid == holder.uid
    assert await task == {"holder_is_self": True}


async def test_factory_leaves_other_coroutines_alone(factory: asyncio.AbstractEventLoop) -> None:
    async def plain() -> int:
        return 7

    task = asyncio.create_task(plain())
    assert type(task) is asyncio.Task
    assert await task == 7
    assert await asyncio.gather(plain(), plain()) == [7, 7]


async def test_factory_accepts_name_and_context(
    registered: Registered, task_name: Names, factory: asyncio.AbstractEventLoop
) -> None:
    variable: contextvars.ContextVar[str] = contextvars.ContextVar("variable", default="unset")

    async def work(data: Any) -> Any:
        return variable.get()

    async def plain() -> str:
        return variable.get()

    name = task_name("factory-kwargs")
    registered(name, work)
    named = asyncio.create_task(work({}), name="my-task")
    assert isinstance(named, TukioTask)
    assert named.get_name() == "my-task"
    plain_named = asyncio.create_task(plain(), name="plain-task")
    assert plain_named.get_name() == "plain-task"
    assert await named == "unset"
    assert await plain_named == "unset"

    if sys.version_info >= (3, 11):  # Python 3.10 has no context argument
        context = contextvars.copy_context()
        context.run(variable.set, "in context")
        with_context = asyncio.create_task(work({}), context=context)
        plain_context = asyncio.create_task(plain(), context=context)
        assert isinstance(with_context, TukioTask)
        assert await with_context == "in context"
        assert await plain_context == "in context"


async def test_factory_accepts_eager_start(registered: Registered, task_name: Names) -> None:
    started: list[bool] = []

    async def work(data: Any) -> Any:
        started.append(True)
        return data

    name = task_name("factory-eager")
    registered(name, work)
    loop = asyncio.get_running_loop()
    task = tukio_factory(loop, work({"e": 1}), eager_start=True)
    assert isinstance(task, TukioTask)
    # A tukio task never starts eagerly: its inputs are set after creation.
    assert started == []
    assert await task == {"e": 1}


async def test_factory_keeps_asyncio_wait_and_awaiting_working(
    registered: Registered, task_name: Names, factory: asyncio.AbstractEventLoop
) -> None:
    future: asyncio.Future[int] = factory.create_future()

    @types.coroutine
    def legacy() -> Generator[None, None, int]:
        yield
        return 5

    async def work(data: Any) -> Any:
        from_future = await future
        from_generator = await legacy()
        await asyncio.sleep(0)
        return {"future": from_future, "generator": from_generator}

    async def plain() -> int:
        return await legacy() + 1

    name = task_name("factory-wait")
    registered(name, work)
    tukio_task = asyncio.create_task(work({}))
    plain_task = asyncio.create_task(plain())
    factory.call_soon(future.set_result, 4)
    done, pending = await asyncio.wait({tukio_task, plain_task}, timeout=1)
    assert pending == set()
    assert done == {tukio_task, plain_task}
    assert tukio_task.result() == {"future": 4, "generator": 5}
    assert plain_task.result() == 6
    assert await asyncio.wait_for(plain(), 1) == 6

    generator = legacy()
    if sys.version_info < (3, 12):
        # Generator-based coroutines can still be tasks here: a plain one.
        task = factory.create_task(generator)  # type: ignore[arg-type]
        assert type(task) is asyncio.Task
        assert await task == 5
    else:
        with pytest.raises(TypeError, match="a coroutine was expected"):
            factory.create_task(generator)  # type: ignore[arg-type]
        generator.close()


# -- a workflow task records its end in its own last step ----------------------------


async def test_the_end_is_recorded_before_the_task_is_done(registered: Registered, task_name: Names) -> None:
    seen: list[tuple[bool, bool, str, Any]] = []

    async def three(data: Any) -> int:
        return 3

    name = task_name("three")
    registered(name, three)
    task = new_task(name, data={"x": 1})
    task.on_ended(lambda t: seen.append((t.ended(), t.done(), t.as_dict()["state"], t.outputs)))
    assert not task.ended()
    assert await task == 3
    assert seen == [(True, False, "finished", 3)]
    assert task.ended()
    assert task.error is None
    # Once ended, nothing cancels it any more (it is done a moment later).
    assert task.cancel() is False
    assert task.timeout() is False
    assert task.suspend() is False


async def test_an_end_callback_that_raises_leaves_the_task_outcome_alone(
    registered: Registered, task_name: Names
) -> None:
    async def three(data: Any) -> int:
        return 3

    name = task_name("three-bad-callback")
    registered(name, three)
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        task = new_task(name, data={})

        def boom(_: TukioTask) -> None:
            raise ValueError("boom")

        task.on_ended(boom)
        assert await task == 3
    finally:
        loop.set_exception_handler(previous)
    assert task.future_state is FutureState.finished
    [context] = reported
    assert "recording its end failed" in context["message"]
    assert isinstance(context["exception"], ValueError)


async def test_a_task_cancelled_before_it_runs_ends_cancelled_without_warning(
    registered: Registered, task_name: Names, recorder: Recorder
) -> None:
    started: list[Any] = []

    async def never(data: Any) -> None:
        started.append(data)

    name = task_name("never-runs")
    registered(name, never)
    task = new_task(name, data={"x": 1})
    ended: list[FutureState] = []
    task.on_ended(lambda t: ended.append(t.future_state))
    assert task.cancel() is True
    with pytest.raises(asyncio.CancelledError):
        await task
    await settle()
    assert started == []
    assert ended == [FutureState.cancelled]
    assert task.as_dict()["state"] == "cancelled"
    assert task.as_dict()["end"] is not None
    assert task.cancel() is False


async def test_a_task_that_cancels_itself_and_returns_ends_cancelled(registered: Registered, task_name: Names) -> None:
    async def quits(data: Any) -> int:
        current = asyncio.current_task()
        assert current is not None
        current.cancel()
        return 1  # asyncio still ends the task cancelled

    name = task_name("cancels-itself")
    registered(name, quits)
    task = new_task(name, data={})
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert task.future_state is FutureState.cancelled
    assert task.as_dict()["state"] == "cancelled"


async def test_the_error_is_known_once_the_task_ended(registered: Registered, task_name: Names) -> None:
    async def fails(data: Any) -> None:
        raise KeyError("gone")

    name = task_name("fails-error")
    registered(name, fails)
    task = new_task(name, data={})
    errors: list[BaseException | None] = []
    task.on_ended(lambda t: errors.append(t.error))
    with pytest.raises(KeyError):
        await task
    assert errors == [task.exception()]
    assert task.error is task.exception()


async def test_a_failed_task_nobody_awaits_is_not_reported_as_never_retrieved(
    registered: Registered, task_name: Names
) -> None:
    async def fails(data: Any) -> None:
        raise KeyError("gone")

    name = task_name("fails-unawaited")
    registered(name, fails)
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        task = new_task(name, data={})
        await until(task.done)
        await settle()
        del task
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert reported == []
