"""Retry policies of tasks: the ``"retry"`` object of a task template."""

from __future__ import annotations

import builtins
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tukio._validation import RETRY_FIELDS, check_retry
from tukio.errors import Problem, SkipTask, TukioTaskError, template_error

__all__ = ["RETRY_FIELDS", "RetryPolicy", "check_retry"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how fast a failing task is tried again.

    `on` names exception classes; an error matches when its class or one of
    its bases has one of those names (``"ConnectionError"``,
    ``"mymodule.MyError"``). `jitter` is a fraction: each delay is multiplied
    by a random factor in ``[1 - jitter, 1 + jitter]``. None matches any exception; `SkipTask`,
    `TukioTaskError` and cancellation are never retried. A timed-out attempt
    counts as a ``TimeoutError``.
    """

    max_attempts: int = 1
    delay: float = 0.0
    backoff: float = 1.0
    max_delay: float | None = None
    jitter: float = 0.0
    on: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RetryPolicy:
        """Build a policy from its JSON object.

        Raises:
            TemplateError: listing every problem of the object.
        """
        problems: list[Problem] = []
        check_retry(d, "retry", problems)
        if problems:
            raise template_error(problems)
        on = d.get("on")
        return cls(
            max_attempts=d.get("max_attempts", 1),
            delay=float(d.get("delay", 0.0)),
            backoff=float(d.get("backoff", 1.0)),
            max_delay=None if d.get("max_delay") is None else float(d["max_delay"]),
            jitter=float(d.get("jitter", 0.0)),
            on=None if on is None else tuple(on),
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON object of the policy."""
        d: dict[str, Any] = {
            "max_attempts": self.max_attempts,
            "delay": self.delay,
            "backoff": self.backoff,
            "jitter": self.jitter,
        }
        if self.max_delay is not None:
            d["max_delay"] = self.max_delay
        if self.on is not None:
            d["on"] = list(self.on)
        return d

    def matches(self, exc: BaseException) -> bool:
        """Return True when `exc` is one this policy retries."""
        if isinstance(exc, (SkipTask, TukioTaskError)) or not isinstance(exc, Exception):
            return False
        if self.on is None:
            return True
        for klass in type(exc).__mro__:
            if klass.__name__ in self.on or f"{klass.__module__}.{klass.__qualname__}" in self.on:
                return True
        return False

    def next_delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before attempt ``attempt + 1`` (attempts count from 1)."""
        delay = self.delay * self.backoff ** (attempt - 1)
        if self.max_delay is not None:
            delay = min(delay, self.max_delay)
        if self.jitter:
            delay *= (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return builtins.max(delay, 0.0)
