"""Small shared helpers: future states, task skipping, listen modes, timeouts."""

from __future__ import annotations

import asyncio
import enum
import itertools
import os
from collections.abc import Callable
from typing import Any

from tukio._report import describe_error
from tukio.errors import SkipTask

__all__ = ["FutureState", "Listen", "SkipTask", "TimeoutHandle", "describe_error"]


# New ids: a random prefix per process, then a counter (see `new_uid`).
_UID_LIMIT = 1 << 48  # what the last 12 hex digits hold
_uid_prefix = ""
_uid_count = itertools.count(_UID_LIMIT)  # spent: the first id draws a prefix


def _reseed_uids() -> None:
    """Draw a new random prefix and restart the counter."""
    global _uid_prefix, _uid_count
    h = os.urandom(10).hex()
    variant = "89ab"[int(h[16], 16) & 3]
    _uid_prefix = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-"
    _uid_count = itertools.count()


if hasattr(os, "register_at_fork"):  # a forked child must not repeat its parent's ids
    os.register_at_fork(after_in_child=_reseed_uids)


def new_uid() -> str:
    """Return a new id in ``str(uuid.uuid4())``'s format, unique across processes and restarts.

    `os.urandom` per id is a system call (about a microsecond, once per
    trigger). Here the 74 random bits of the first 20 hex digits are drawn
    once per process (again in a forked child, and when the counter is
    spent) and the last 12 digits count. Two processes share a prefix with
    probability about n**2 / 2**75 for n processes ever started, so ids stay
    as unique as uuid4's (the journals key on them); the version nibble is
    4 and the variant bits 10. Safe across threads: `itertools.count` steps
    under the GIL.
    """
    n = next(_uid_count)
    if n >= _UID_LIMIT:
        _reseed_uids()
        return new_uid()
    return f"{_uid_prefix}{n:012x}"


class FutureState(str, enum.Enum):
    """The state of a task or workflow, as reported by `as_dict()`."""

    pending = "pending"
    cancelled = "cancelled"
    exception = "exception"
    finished = "finished"
    skipped = "skipped"
    suspended = "suspended"
    timeout = "timeout"

    # The hash of the value (each name is its value), computed in C: Enum's
    # own __hash__ is Python code, run on every state check.
    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value

    @classmethod
    def get(cls, future: asyncio.Future[Any]) -> FutureState:
        """Return the state of `future` (a tukio task, a workflow or any future)."""
        own = getattr(future, "future_state", None)
        if isinstance(own, FutureState):
            return own
        return cls.of(future, timed_out=False, suspended=False)

    @classmethod
    def of(cls, future: asyncio.Future[Any], *, timed_out: bool, suspended: bool) -> FutureState:
        """Compute the state of `future` given the two flags asyncio lacks."""
        if not future.done():
            return cls.suspended if suspended else cls.pending
        if timed_out:
            return cls.timeout
        if future.cancelled():
            return cls.suspended if suspended else cls.cancelled
        exc = future.exception()
        if exc is None:
            return cls.finished
        if isinstance(exc, SkipTask):
            return cls.skipped
        return cls.exception

    def done(self) -> bool:
        """True for the end states that let data flow or record a failure."""
        return self in _DONE


_DONE = frozenset({FutureState.finished, FutureState.skipped, FutureState.exception, FutureState.timeout})


class Listen(enum.Enum):
    """What a task or workflow listens to, derived from its `topics`."""

    everything = "everything"
    nothing = "nothing"
    topics = "topics"

    @classmethod
    def get(cls, topics: list[str] | None) -> Listen:
        """Map `topics` to a mode: None → everything, [] → nothing, a list → topics.

        Raises:
            TypeError: `topics` is neither None nor a list.
        """
        if topics is None:
            return cls.everything
        if isinstance(topics, list):
            return cls.topics if topics else cls.nothing
        raise TypeError(f"topics must be None or a list of strings, not {type(topics).__name__}")


class TimeoutHandle:
    """Ends a future after `timeout` seconds unless it is done before.

    When the delay expires, the future's own `timeout()` method is called if it
    has one (tukio tasks and workflows do), else the future is cancelled.
    """

    __slots__ = ("_future", "_handle", "_timeout")

    def __init__(self, future: asyncio.Future[Any], timeout: float | None, loop: Any = None) -> None:
        self._future = future
        self._timeout = timeout
        self._handle: asyncio.TimerHandle | None = None

    @property
    def timeout(self) -> float | None:
        """The delay in seconds, or None for no timeout."""
        return self._timeout

    def start(self) -> None:
        """Arm the timer (does nothing without a timeout or once the future is done)."""
        if self._timeout is None or self._future.done() or self._handle is not None:
            return
        loop = self._future.get_loop()
        self._handle = loop.call_later(self._timeout, self._expire)
        self._future.add_done_callback(self._disarm)

    def cancel(self) -> None:
        """Disarm the timer."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _disarm(self, _future: asyncio.Future[Any]) -> None:
        self.cancel()

    def _expire(self) -> None:
        self._handle = None
        if self._future.done():
            return
        expire: Callable[[], Any] | None = getattr(self._future, "timeout", None)
        if callable(expire):
            expire()
        else:
            self._future.cancel()
