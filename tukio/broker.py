"""The per-loop event broker: topics, handlers and dispatch.

Registration and unregistration are O(1); dispatch costs O(handlers called)
and nothing when nobody listens to the topics.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any

from tukio.event import Event, EventSource

__all__ = ["EXEC_TOPIC", "Broker", "TopicManager", "get_broker", "workflow_exec_topics"]

log = logging.getLogger(__name__)

EXEC_TOPIC = "__exec_topic__"
"""The topic every execution event is dispatched on (and on ``EXEC_TOPIC + '/' + workflow_uid``)."""

Handler = Callable[[Event], Awaitable[Any] | Any]
Topics = str | Iterable[str] | None


def workflow_exec_topics(uid: str) -> tuple[str, str]:
    """Return the two topics execution events of workflow `uid` go to."""
    return EXEC_TOPIC, f"{EXEC_TOPIC}/{uid}"


class Broker:
    """Dispatches events to global handlers and to handlers of their topics.

    Each loop has one broker (see `get_broker`); handlers never run inline:
    coroutine handlers become tasks, plain callables are called with
    ``loop.call_soon``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if loop is None:
            loop = asyncio.get_running_loop()
        # A weak reference, so the per-loop registry does not keep dead loops alive.
        self._loop_ref = weakref.ref(loop)
        # handler -> is it a coroutine function?  Dicts keep insertion order.
        self._global: dict[Handler, bool] = {}
        self._by_topic: dict[str, dict[Handler, bool]] = {}
        # handler -> number of topics it listens to, for the O(1) global check.
        self._topic_count: dict[Handler, int] = {}
        self._running: set[asyncio.Future[Any]] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop this broker dispatches on.

        Raises:
            RuntimeError: the loop was garbage collected.
        """
        loop = self._loop_ref()
        if loop is None:
            raise RuntimeError("the broker's event loop is gone")
        return loop

    def register(self, handler: Handler, topic: str | None = None) -> None:
        """Register `handler` globally (`topic` None) or on `topic`.

        Raises:
            TypeError: `handler` is not callable or `topic` is not a string.
            ValueError: the handler is already registered the other way
                (global versus per-topic).
        """
        if not callable(handler):
            raise TypeError(f"handler must be a coroutine function or a callable, not {type(handler).__name__}")
        is_coro = inspect.iscoroutinefunction(handler)
        if topic is None:
            if handler in self._topic_count:
                raise ValueError(f"{handler!r} is already registered on a topic; it cannot also be global")
            self._global[handler] = is_coro
            return
        if not isinstance(topic, str):
            raise TypeError(f"topic must be a string or None, not {type(topic).__name__}")
        if handler in self._global:
            raise ValueError(f"{handler!r} is already a global handler; it cannot also listen to {topic!r}")
        handlers = self._by_topic.setdefault(topic, {})
        if handler not in handlers:
            self._topic_count[handler] = self._topic_count.get(handler, 0) + 1
        handlers[handler] = is_coro

    def unregister(self, handler: Handler, topic: str | None = None) -> None:
        """Remove `handler` from the global handlers or from `topic`.

        Raises:
            KeyError: it was not registered there.
        """
        if topic is None:
            try:
                del self._global[handler]
            except KeyError:
                raise KeyError(f"{handler!r} is not a global handler") from None
            return
        handlers = self._by_topic.get(topic)
        if handlers is None or handler not in handlers:
            raise KeyError(f"{handler!r} is not registered on topic {topic!r}")
        del handlers[handler]
        if not handlers:
            del self._by_topic[topic]
        left = self._topic_count.pop(handler) - 1
        if left:
            self._topic_count[handler] = left

    def listened(self) -> bool:
        """True when any handler is registered (globally or on any topic)."""
        return bool(self._global) or bool(self._by_topic)

    def has_listeners(self, topics: Iterable[str]) -> bool:
        """Return True when a dispatch on `topics` would call any handler."""
        return bool(self._global) or not self._by_topic.keys().isdisjoint(topics)

    def publish(
        self, topics: tuple[str, ...], event_type: str, content: Any, source: Callable[[], EventSource | None]
    ) -> None:
        """Dispatch an execution event ``{'type', 'content'}`` on `topics`.

        Costs one lookup when nobody listens: `source` is only called, and the
        event only built, when a handler will receive it.
        """
        if self._global or not self._by_topic.keys().isdisjoint(topics):
            self.dispatch({"type": event_type, "content": content}, topics, source())

    def dispatch(self, data: dict[str, Any] | Event, topics: Topics = None, source: EventSource | None = None) -> None:
        """Send `data` to every global handler and every handler of `topics`.

        Each handler is called once per dispatch, whatever the number of
        topics it listens to; it receives an `Event` wrapping the data (an
        `Event` given as data is passed as is).

        Raises:
            ValueError: `data` is neither a dict nor an Event.
            TypeError: `topics` is not None, a string or an iterable of strings.
        """
        if topics is None:
            topic_list: tuple[str, ...] = ()
        elif isinstance(topics, str):
            topic_list = (topics,)
        else:
            topic_list = tuple(topics)
            if not all(isinstance(t, str) for t in topic_list):
                raise TypeError("topics must be None, a string or an iterable of strings")
        if isinstance(data, Event):
            first: Event = data
        else:
            first = Event(data, topic=topic_list[0] if topic_list else None, source=source)
        if not self.has_listeners(topic_list):
            return
        for handler, is_coro in self._global.items():
            self._call(handler, is_coro, first)
        if len(topic_list) == 1:
            for handler, is_coro in self._by_topic.get(topic_list[0], {}).items():
                self._call(handler, is_coro, first)
            return
        seen: set[Handler] = set()
        for topic in topic_list:
            handlers = self._by_topic.get(topic)
            if not handlers:
                continue
            event = first if isinstance(data, Event) or topic == first.topic else Event(first, topic, source)
            for handler, is_coro in handlers.items():
                if handler not in seen:
                    seen.add(handler)
                    self._call(handler, is_coro, event)

    def _call(self, handler: Handler, is_coro: bool, event: Event) -> None:
        if is_coro:
            self._start(handler, event)
        else:
            self.loop.call_soon(self._run_callable, handler, event)

    def _start(self, handler: Handler, event: Event) -> None:
        try:
            coro = handler(event)
        except Exception:
            log.exception("broker: handler %r failed on topic %r", handler, event.topic)
            return
        if not inspect.isawaitable(coro):
            return
        task = asyncio.ensure_future(coro, loop=self.loop)
        self._running.add(task)
        task.add_done_callback(lambda t: self._handler_done(t, handler, event))

    def _run_callable(self, handler: Handler, event: Event) -> None:
        try:
            result = handler(event)
        except Exception:
            log.exception("broker: handler %r failed on topic %r", handler, event.topic)
            return
        if inspect.isawaitable(result):
            # An object whose __call__ is async: run what it returned.
            task = asyncio.ensure_future(result, loop=self.loop)
            self._running.add(task)
            task.add_done_callback(lambda t: self._handler_done(t, handler, event))

    def _handler_done(self, task: asyncio.Future[Any], handler: Handler, event: Event) -> None:
        self._running.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error(
                "broker: handler %r failed on topic %r",
                handler,
                event.topic,
                exc_info=(type(exc), exc, exc.__traceback__),
            )


_brokers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Broker] = weakref.WeakKeyDictionary()


def get_broker(loop: asyncio.AbstractEventLoop | None = None) -> Broker:
    """Return the broker of `loop` (the running loop when None), creating it once.

    Raises:
        RuntimeError: `loop` is None and no loop is running.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    broker = _brokers.get(loop)
    if broker is None:
        broker = _brokers[loop] = Broker(loop)
    return broker


class TopicManager:
    """Subscribe the running tukio task to `topic` for the span of a ``with``.

    Events dispatched on the topic land in the task's `queue`.
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def __enter__(self) -> TopicManager:
        self.subscribe(self.topic)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.unsubscribe(self.topic)

    @staticmethod
    def _receiver() -> Handler:
        task = asyncio.current_task()
        receiver = getattr(task, "data_received", None)
        if receiver is None:
            raise RuntimeError("TopicManager must be used inside a running tukio task")
        handler: Handler = receiver
        return handler

    @classmethod
    def subscribe(cls, topic: str) -> None:
        """Subscribe the running tukio task to `topic`.

        Raises:
            RuntimeError: not called from inside a tukio task.
        """
        get_broker().register(cls._receiver(), topic)

    @classmethod
    def unsubscribe(cls, topic: str) -> None:
        """Unsubscribe the running tukio task from `topic`.

        Raises:
            RuntimeError: not called from inside a tukio task.
            KeyError: the task was not subscribed to `topic`.
        """
        get_broker().unregister(cls._receiver(), topic)
