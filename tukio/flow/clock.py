"""Clocks for flow control: the wall clock, and a virtual one for tests.

Delayed starts, rate windows, key retention and schedules read the time and
set timers through a `Clock`, so that tests (yours too) can move time on at
once with `VirtualClock.advance` instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "SystemClock", "Timer", "VirtualClock"]


class Timer(Protocol):
    """What `Clock.call_at` returns: a timer that can be cancelled."""

    def cancel(self) -> None:
        """Do not call the callback (nothing happens if it was called)."""


class Clock(Protocol):
    """The time, in seconds since the epoch, and timers at given times."""

    def time(self) -> float:
        """Return the current time (seconds since the epoch, UTC)."""

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        """Call `callback()` on the event loop once `time()` reaches `when`."""


class _WallTimer:
    """A loop timer that re-arms itself if the wall clock was set back meanwhile."""

    __slots__ = ("_callback", "_handle", "_when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self._when = when
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        delay = max(0.0, self._when - time.time())
        self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        if time.time() < self._when - 0.001:
            self._arm()
        else:
            self._handle = None
            self._callback()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class SystemClock:
    """The wall clock (`time.time`), with timers on the running event loop."""

    def time(self) -> float:
        """Return `time.time()`."""
        return time.time()

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        """Call `callback()` on the running loop at wall-clock time `when`.

        Raises:
            RuntimeError: no event loop is running.
        """
        return _WallTimer(when, callback)


class _VirtualTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """A clock that moves only when told to (`advance`, `set`): for tests.

    Args:
        start: the time it starts at (seconds since the epoch).
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _VirtualTimer]] = []
        self._order = itertools.count()

    def time(self) -> float:
        """Return the virtual time."""
        return self._now

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        """Call `callback()` when `advance` or `set` moves the time to `when` or past it."""
        timer = _VirtualTimer(callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    @property
    def next_timer(self) -> float | None:
        """When the next pending timer is due, or None."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def advance(self, seconds: float) -> int:
        """Move the time `seconds` on, calling each timer due on the way at its own time, in order.

        Returns:
            How many callbacks were called.

        Raises:
            ValueError: `seconds` is negative.
        """
        if seconds < 0:
            raise ValueError(f"time cannot go back ({seconds} s)")
        return self.set(self._now + seconds)

    def set(self, when: float) -> int:
        """Move the time to `when` (not back), calling the timers due on the way.

        Returns:
            How many callbacks were called.

        Raises:
            ValueError: `when` is before the current time.
        """
        if when < self._now:
            raise ValueError(f"time cannot go back (from {self._now} to {when})")
        called = 0
        while (due := self.next_timer) is not None and due <= when:
            _, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, due)
            timer.callback()
            called += 1
        self._now = when
        return called
