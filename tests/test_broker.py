"""The per-loop broker: registration, dispatch, handler errors, topic managers."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from support import settle

from tukio import EXEC_TOPIC as ROOT_EXEC_TOPIC
from tukio import get_broker as root_get_broker
from tukio.broker import EXEC_TOPIC, Broker, TopicManager, get_broker, workflow_exec_topics
from tukio.event import Event, EventSource
from tukio.task import TukioTask, new_task


class Calls:
    """A plain-callable handler recording the events it receives."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)


class AsyncCalls:
    """Builds a coroutine-function handler recording the events it receives."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def handler(self, event: Event) -> None:
        self.events.append(event)


# -- one broker per loop -----------------------------------------------------


async def test_get_broker_returns_one_broker_per_loop() -> None:
    broker = get_broker()
    assert isinstance(broker, Broker)
    assert get_broker() is broker
    assert get_broker(asyncio.get_running_loop()) is broker
    assert broker.loop is asyncio.get_running_loop()
    assert root_get_broker is get_broker

    other_loop = asyncio.new_event_loop()
    try:
        other = get_broker(other_loop)
        assert other is not broker
        assert other.loop is other_loop
        assert get_broker(other_loop) is other
    finally:
        other_loop.close()


def test_get_broker_without_a_running_loop_raises() -> None:
    with pytest.raises(RuntimeError):
        get_broker()


def test_get_broker_does_not_keep_closed_loops_alive() -> None:
    loop = asyncio.new_event_loop()
    broker = get_broker(loop)
    assert get_broker(loop) is broker
    ref = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    assert ref() is None
    with pytest.raises(RuntimeError, match="event loop is gone"):
        _ = broker.loop


# -- registration ------------------------------------------------------------


@pytest.mark.parametrize("handler", [None, 42, "handler", object()])
async def test_register_rejects_what_is_not_callable(handler: Any) -> None:
    with pytest.raises(TypeError, match="handler must be a coroutine function or a callable"):
        get_broker().register(handler)
    with pytest.raises(TypeError, match="handler must be a coroutine function or a callable"):
        get_broker().register(handler, "topic")


@pytest.mark.parametrize("topic", [1, b"bytes", ["a"], ("a",)])
async def test_register_rejects_a_topic_that_is_not_a_string(topic: Any) -> None:
    broker = get_broker()
    handler = Calls()
    with pytest.raises(TypeError, match="topic must be a string or None"):
        broker.register(handler, topic)
    # Nothing was registered.
    with pytest.raises(KeyError):
        broker.unregister(handler)


async def test_a_global_handler_cannot_also_listen_to_a_topic() -> None:
    broker = get_broker()
    handler = Calls()
    broker.register(handler)
    with pytest.raises(ValueError, match="already a global handler"):
        broker.register(handler, "t")
    broker.unregister(handler)
    # Once unregistered it may listen to a topic.
    broker.register(handler, "t")
    broker.unregister(handler, "t")


async def test_a_topic_handler_cannot_also_be_global() -> None:
    broker = get_broker()
    handler = Calls()
    broker.register(handler, "a")
    broker.register(handler, "b")
    with pytest.raises(ValueError, match="already registered on a topic"):
        broker.register(handler)
    broker.unregister(handler, "a")
    with pytest.raises(ValueError, match="already registered on a topic"):
        broker.register(handler)
    broker.unregister(handler, "b")
    broker.register(handler)
    broker.unregister(handler)


async def test_unregister_unknown_handlers_raises_key_error() -> None:
    broker = get_broker()
    handler = Calls()
    with pytest.raises(KeyError, match="is not a global handler"):
        broker.unregister(handler)
    with pytest.raises(KeyError, match="is not registered on topic 't'"):
        broker.unregister(handler, "t")
    broker.register(handler, "t")
    with pytest.raises(KeyError, match="is not registered on topic 'other'"):
        broker.unregister(handler, "other")
    with pytest.raises(KeyError, match="is not a global handler"):
        broker.unregister(handler)
    broker.unregister(handler, "t")
    with pytest.raises(KeyError, match="is not registered on topic 't'"):
        broker.unregister(handler, "t")


async def test_unregistered_handlers_receive_nothing() -> None:
    broker = get_broker()
    glob, topical = Calls(), Calls()
    broker.register(glob)
    broker.register(topical, "t")
    broker.unregister(glob)
    broker.unregister(topical, "t")
    assert not broker.has_listeners(["t"])
    broker.dispatch({"x": 1}, "t")
    await settle()
    assert glob.events == []
    assert topical.events == []


# -- dispatch ----------------------------------------------------------------


async def test_dispatch_reaches_global_and_topic_handlers_once() -> None:
    broker = get_broker()
    glob, on_a, on_b, on_both, on_other = Calls(), Calls(), Calls(), Calls(), Calls()
    broker.register(glob)
    broker.register(on_a, "a")
    broker.register(on_b, "b")
    broker.register(on_both, "a")
    broker.register(on_both, "b")
    broker.register(on_both, "b")  # registering twice on a topic is harmless
    broker.register(on_other, "other")
    source = EventSource(workflow_template_id="wt")

    broker.dispatch({"n": 1}, ["a", "b"], source)
    await settle()
    assert [e.data for e in glob.events] == [{"n": 1}]
    assert [e.data for e in on_a.events] == [{"n": 1}]
    assert [e.data for e in on_b.events] == [{"n": 1}]
    assert [e.data for e in on_both.events] == [{"n": 1}]
    assert on_other.events == []
    # A topic handler sees the topic it listens to; everyone sees the source.
    assert on_a.events[0].topic == "a"
    assert on_b.events[0].topic == "b"
    assert on_both.events[0].topic in {"a", "b"}
    assert glob.events[0].topic in {"a", "b"}
    assert all(e.source == source for e in glob.events + on_a.events + on_b.events + on_both.events)

    broker.dispatch({"n": 2}, "b")
    broker.dispatch({"n": 3})
    broker.dispatch({"n": 4}, iter(["a", "other", "nobody"]))
    await settle()
    assert [e.data["n"] for e in glob.events] == [1, 2, 3, 4]
    assert [e.data["n"] for e in on_a.events] == [1, 4]
    assert [e.data["n"] for e in on_b.events] == [1, 2]
    assert [e.data["n"] for e in on_both.events] == [1, 2, 4]
    assert [e.data["n"] for e in on_other.events] == [4]
    assert glob.events[2].topic is None


async def test_dispatch_wraps_a_copy_of_the_data() -> None:
    broker = get_broker()
    handler = Calls()
    broker.register(handler, "t")
    data = {"x": 1}
    broker.dispatch(data, "t")
    data["x"] = 2
    await settle()
    assert handler.events[0].data == {"x": 1}


async def test_dispatch_never_runs_handlers_inline() -> None:
    broker = get_broker()
    plain, coro = Calls(), AsyncCalls()
    broker.register(plain)
    broker.register(coro.handler, "t")
    broker.dispatch({"x": 1}, "t")
    # Nothing ran yet: dispatch only scheduled the handlers.
    assert plain.events == []
    assert coro.events == []
    await settle()
    assert len(plain.events) == 1
    assert len(coro.events) == 1


async def test_coroutine_handlers_run_as_tasks() -> None:
    broker = get_broker()
    done = asyncio.Event()
    seen: list[tuple[Event, asyncio.Task[Any] | None]] = []

    async def handler(event: Event) -> None:
        seen.append((event, asyncio.current_task()))
        done.set()

    broker.register(handler, "t")
    broker.dispatch({"x": 1}, "t")
    await asyncio.wait_for(done.wait(), 1)
    event, task = seen[0]
    assert event.data == {"x": 1}
    assert task is not None
    assert task is not asyncio.current_task()


async def test_an_object_with_an_async_call_is_awaited() -> None:
    broker = get_broker()
    done = asyncio.Event()

    class Handler:
        def __init__(self) -> None:
            self.events: list[Event] = []

        async def __call__(self, event: Event) -> None:
            self.events.append(event)
            done.set()

    handler = Handler()
    broker.register(handler, "t")
    broker.dispatch({"x": 1}, "t")
    await asyncio.wait_for(done.wait(), 1)
    assert [e.data for e in handler.events] == [{"x": 1}]


async def test_an_event_passed_as_data_keeps_its_topic_and_source() -> None:
    broker = get_broker()
    glob, on_a, on_b = Calls(), Calls(), Calls()
    broker.register(glob)
    broker.register(on_a, "a")
    broker.register(on_b, "b")
    source = EventSource(task_template_id="f1")
    event = Event({"x": 1}, topic="original", source=source)
    broker.dispatch(event, ["a", "b"], EventSource(task_template_id="ignored"))
    await settle()
    for handler in (glob, on_a, on_b):
        assert len(handler.events) == 1
        received = handler.events[0]
        assert received.data == {"x": 1}
        assert received.topic == "original"
        assert received.source is source


async def test_dispatch_rejects_bad_data_and_topics() -> None:
    broker = get_broker()
    handler = Calls()
    broker.register(handler)
    with pytest.raises(ValueError, match="event data must be a dict or an Event"):
        broker.dispatch(["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="topics must be None, a string or an iterable of strings"):
        broker.dispatch({}, ["ok", 3])  # type: ignore[list-item]
    await settle()
    assert handler.events == []


async def test_a_failing_handler_is_logged_and_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    broker = get_broker()
    after_plain, after_coro = Calls(), AsyncCalls()

    def bad_plain(event: Event) -> None:
        raise RuntimeError("plain handler broke")

    async def bad_coro(event: Event) -> None:
        raise RuntimeError("coroutine handler broke")

    broker.register(bad_plain, "news")
    broker.register(bad_coro, "news")
    broker.register(after_plain, "news")
    broker.register(after_coro.handler, "news")
    with caplog.at_level(logging.ERROR, logger="tukio.broker"):
        broker.dispatch({"x": 1}, "news")
        await settle()
        broker.dispatch({"x": 2}, "news")
        await settle()
    assert [e.data["x"] for e in after_plain.events] == [1, 2]
    assert [e.data["x"] for e in after_coro.events] == [1, 2]
    records = [r for r in caplog.records if r.name == "tukio.broker"]
    assert len(records) == 4
    for record in records:
        assert record.levelno == logging.ERROR
        assert "'news'" in record.getMessage()
        assert record.exc_info is not None
    messages = sorted(str(r.exc_info[1]) for r in records if r.exc_info)
    assert messages == ["coroutine handler broke"] * 2 + ["plain handler broke"] * 2


async def test_a_coroutine_handler_whose_call_fails_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    broker = get_broker()
    after = Calls()

    async def takes_two(first: Any, event: Event) -> None:  # pragma: no cover - never runs
        raise AssertionError

    # A coroutine function (for inspect) whose call raises at once: too many arguments.
    handler = functools.partial(takes_two, 1, 2)
    broker.register(handler, "t")
    broker.register(after, "t")
    with caplog.at_level(logging.ERROR, logger="tukio.broker"):
        broker.dispatch({}, "t")
        await settle()
    assert len(after.events) == 1
    [record] = [r for r in caplog.records if r.name == "tukio.broker"]
    assert "'t'" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], TypeError)


async def test_has_listeners() -> None:
    broker = get_broker()
    handler = Calls()
    assert not broker.has_listeners(["a"])
    broker.register(handler, "a")
    assert broker.has_listeners(["b", "a"])
    assert not broker.has_listeners(["b"])
    broker.unregister(handler, "a")
    broker.register(handler)
    assert broker.has_listeners([])
    broker.unregister(handler)


# -- execution topics and publish ---------------------------------------------


def test_exec_topics() -> None:
    assert EXEC_TOPIC == "__exec_topic__"
    assert ROOT_EXEC_TOPIC is EXEC_TOPIC
    assert workflow_exec_topics("abc") == ("__exec_topic__", "__exec_topic__/abc")


async def test_publish_builds_nothing_when_nobody_listens() -> None:
    broker = get_broker()
    built: list[int] = []

    def source() -> EventSource:
        built.append(1)
        return EventSource(workflow_exec_id="run")

    topics = workflow_exec_topics("run")
    broker.publish(topics, "workflow-begin", {"x": 1}, source)
    assert built == []

    elsewhere = Calls()
    broker.register(elsewhere, "elsewhere")
    broker.publish(topics, "workflow-begin", {"x": 1}, source)
    await settle()
    assert built == []
    assert elsewhere.events == []

    listener = Calls()
    broker.register(listener, topics[1])
    broker.publish(topics, "workflow-end", {"x": 2}, source)
    await settle()
    assert built == [1]
    assert len(listener.events) == 1
    event = listener.events[0]
    assert event.data == {"type": "workflow-end", "content": {"x": 2}}
    assert event.topic == topics[1]
    assert event.source == EventSource(workflow_exec_id="run")


async def test_publish_reaches_global_handlers() -> None:
    broker = get_broker()
    listener = Calls()
    broker.register(listener)
    broker.publish((EXEC_TOPIC,), "task-begin", None, lambda: None)
    await settle()
    assert [e.data for e in listener.events] == [{"type": "task-begin", "content": None}]
    assert listener.events[0].topic == EXEC_TOPIC


# -- topic managers ----------------------------------------------------------


async def test_topic_manager_outside_a_tukio_task_raises() -> None:
    with pytest.raises(RuntimeError, match="inside a running tukio task"), TopicManager("t"):
        pass  # pragma: no cover
    with pytest.raises(RuntimeError, match="inside a running tukio task"):
        TopicManager.subscribe("t")
    with pytest.raises(RuntimeError, match="inside a running tukio task"):
        TopicManager.unsubscribe("t")
    assert not get_broker().has_listeners(["t"])


async def test_topic_manager_subscribes_the_running_task(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    broker = get_broker()
    inside = asyncio.Event()
    left = asyncio.Event()

    async def listener(data: Any) -> Any:
        task = asyncio.current_task()
        assert isinstance(task, TukioTask)
        with TopicManager("alerts") as manager:
            assert manager.topic == "alerts"
            inside.set()
            event = await task.queue.get()
        left.set()
        return {"got": event.data, "topic": event.topic}

    name = task_name("topic-manager")
    registered(name, listener)
    task = new_task(name, data={})
    await asyncio.wait_for(inside.wait(), 1)
    assert broker.has_listeners(["alerts"])
    broker.dispatch({"level": "high"}, "alerts")
    await asyncio.wait_for(left.wait(), 1)
    # Leaving the block unsubscribed the task.
    assert not broker.has_listeners(["alerts"])
    assert await task == {"got": {"level": "high"}, "topic": "alerts"}


async def test_topic_manager_class_methods(registered: Callable[..., Any], task_name: Callable[[str], str]) -> None:
    broker = get_broker()
    subscribed = asyncio.Event()
    release = asyncio.Event()

    async def listener(data: Any) -> Any:
        TopicManager.subscribe("one")
        TopicManager.subscribe("two")
        subscribed.set()
        await release.wait()
        TopicManager.unsubscribe("one")
        with pytest.raises(KeyError, match="'one'"):
            TopicManager.unsubscribe("one")
        TopicManager.unsubscribe("two")
        task = asyncio.current_task()
        assert isinstance(task, TukioTask)
        return [task.queue.get_nowait().data for _ in range(task.queue.qsize())]

    name = task_name("topic-methods")
    registered(name, listener)
    task = new_task(name, data={})
    await asyncio.wait_for(subscribed.wait(), 1)
    broker.dispatch({"n": 1}, "one")
    broker.dispatch({"n": 2}, ["one", "two"])
    broker.dispatch({"n": 3}, "three")
    await settle()
    release.set()
    assert await task == [{"n": 1}, {"n": 2}]
    assert not broker.has_listeners(["one", "two"])
