"""Retry policies of tasks: the ``"retry"`` object of a task template."""

from __future__ import annotations

import builtins
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tukio._validation import finite, short_repr
from tukio.errors import Problem, template_error

__all__ = ["RetryPolicy", "check_retry"]

_FIELDS = ("max_attempts", "delay", "backoff", "max_delay", "jitter", "on")


def _number(d: Mapping[str, Any], key: str, where: str, out: list[Problem], *, minimum: float, strict: bool) -> None:
    if key not in d:
        return
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        out.append(Problem(f"{where}.{key}", f"must be a number, got {type(value).__name__}", TypeError))
    elif finite(value) is None or value < minimum or (strict and value == minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        out.append(Problem(f"{where}.{key}", f"must be {bound}, got {short_repr(value)}", ValueError))


def check_retry(value: Any, where: str, out: list[Problem]) -> None:
    """Check a retry object; append a `Problem` per mistake to `out`."""
    if not isinstance(value, Mapping):
        out.append(Problem(where, f"must be an object, got {type(value).__name__}", TypeError))
        return
    for key in value:
        if key not in _FIELDS:
            out.append(Problem(f"{where}.{key}", f"unknown field (expected one of {', '.join(_FIELDS)})", ValueError))
    attempts = value.get("max_attempts", 1)
    if isinstance(attempts, bool) or not isinstance(attempts, int):
        out.append(Problem(f"{where}.max_attempts", f"must be an integer, got {type(attempts).__name__}", TypeError))
    elif attempts < 1:
        out.append(Problem(f"{where}.max_attempts", f"must be >= 1, got {attempts}", ValueError))
    _number(value, "delay", where, out, minimum=0, strict=False)
    _number(value, "backoff", where, out, minimum=1, strict=False)
    _number(value, "max_delay", where, out, minimum=0, strict=False)
    _number(value, "jitter", where, out, minimum=0, strict=False)
    jitter = value.get("jitter", 0)
    if isinstance(jitter, (int, float)) and not isinstance(jitter, bool) and jitter > 1:
        out.append(Problem(f"{where}.jitter", f"must be a fraction between 0 and 1, got {jitter!r}", ValueError))
    on = value.get("on")
    if on is None:
        return
    if not isinstance(on, list):
        out.append(
            Problem(f"{where}.on", f"must be a list of exception class names, got {type(on).__name__}", TypeError)
        )
        return
    for i, name in enumerate(on):
        if not isinstance(name, str) or not name:
            out.append(Problem(f"{where}.on[{i}]", f"must be an exception class name, got {name!r}", TypeError))


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
        from tukio.task.task import TukioTaskError
        from tukio.utils import SkipTask

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
