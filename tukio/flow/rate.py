"""`SlidingWindow`: at most N starts in any window of `period` seconds."""

from __future__ import annotations

from collections import deque

from tukio.flow.limits import RateSpec

__all__ = ["SlidingWindow"]


class SlidingWindow:
    """A sliding-window rate limit: at most `limit` starts in any `period` seconds.

    It keeps the time of the last `limit` starts: a start is allowed when the
    oldest of them is at least `period` seconds old. Unlike a fixed window,
    no burst of 2N starts can straddle a window's edge.

    Args:
        limit: how many starts a window allows (> 0).
        period: the window's length in seconds (> 0).

    Raises:
        ValueError: `limit` or `period` is not positive.
    """

    __slots__ = ("_starts", "limit", "period")

    def __init__(self, limit: int, period: float) -> None:
        if limit < 1 or not period > 0:
            raise ValueError(f"a rate needs a positive limit and period, got {limit} per {period} s")
        self.limit = limit
        self.period = float(period)
        self._starts: deque[float] = deque(maxlen=limit)

    @classmethod
    def from_spec(cls, spec: RateSpec) -> SlidingWindow:
        """Build the window of a template's ``"rate"`` (checked by validation)."""
        return cls(spec["limit"], spec["period"])

    def wait(self, now: float) -> float:
        """Seconds until a start is allowed (0.0 if one is allowed now)."""
        starts = self._starts
        if len(starts) < self.limit:
            return 0.0
        return max(0.0, starts[0] + self.period - now)

    def take(self, now: float) -> None:
        """Record a start at `now` (the oldest one falls out once `limit` are kept)."""
        self._starts.append(now)
