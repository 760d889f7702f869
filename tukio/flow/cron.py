"""`CronExpression`: five-field cron expressions, and their next tick in a time zone.

A small parser of the classic syntax (standard library only): ``minute hour
day-of-month month day-of-week``, each field ``*``, a number, a range
``a-b``, a step ``*/n`` or ``a-b/n`` or ``a/n``, or a comma-separated list of
those; months and days of the week also by their English three-letter names
(``jan``, ``mon``); Sunday is 0 or 7. The aliases ``@yearly`` (``@annually``),
``@monthly``, ``@weekly``, ``@daily`` (``@midnight``) and ``@hourly`` stand
for their usual expressions. When both the day of the month and the day of
the week are restricted (neither is ``*``), a day matching either one
matches, as in Vixie cron.

Ticks are wall-clock times of the expression's time zone. Across daylight
saving changes:

- a tick whose local time does not exist (the hour skipped in spring) fires
  once, at the end of the gap (``30 2 * * *`` fires at 03:00 that day), and
  several ticks in the same gap fire once, together;
- a local time that happens twice (the hour repeated in autumn) fires once,
  at its first occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

from tukio.errors import CronError

__all__ = ["CronError", "CronExpression"]

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# name, lowest, highest, names (numbered from the lowest value)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# How far ahead a tick is searched before the expression is said never to fire
# (a 29 February that is a given weekday comes back within 28 years).
_HORIZON_YEARS = 30
_MINUTE = timedelta(minutes=1)


def _value(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    lowered = text.lower()
    if lowered in names:
        return low + names.index(lowered)
    if not text.isdigit():
        raise ValueError(f"{name} {text!r} is not a number" + (" or a name" if names else ""))
    number = int(text)
    if not low <= number <= high:
        raise ValueError(f"{name} {number} out of range {low}-{high}")
    return number


def _parse_field(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        span, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name} step {step_text!r} must be a positive number")
            step = int(step_text)
        if span == "*":
            first, last = low, high
        elif "-" in span:
            start, _, end = span.partition("-")
            first, last = _value(start, name, low, high, names), _value(end, name, low, high, names)
            if first > last:
                raise ValueError(f"{name} range {span!r} goes backwards")
        else:
            first = _value(span, name, low, high, names)
            last = high if slash else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronExpression:
    """A parsed cron expression (see the module docstring for the syntax).

    Build one with `CronExpression.parse`.
    """

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    any_day: bool  # the day of month is '*'
    any_weekday: bool  # the day of week is '*'

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Parse a five-field expression or an ``@alias``.

        Raises:
            CronError: the expression does not parse, or no date ever
                matches it (``0 0 30 2 *``); the message names the field.
            TypeError: `text` is not a string.
        """
        if not isinstance(text, str):
            raise TypeError(f"a cron expression must be a string, got {type(text).__name__}")
        expanded = _ALIASES.get(text.strip().lower(), text)
        if expanded.startswith("@"):
            raise CronError(text, f"unknown alias {expanded.split()[0]!r} (expected one of {', '.join(_ALIASES)})")
        fields = expanded.split()
        if len(fields) != len(_FIELDS):
            raise CronError(text, f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
        try:
            parsed = [_parse_field(f, *spec) for f, spec in zip(fields, _FIELDS, strict=True)]
        except ValueError as exc:
            raise CronError(text, str(exc)) from None
        minutes, hours, days, months, weekdays = parsed
        expression = cls(
            text=text,
            minutes=minutes,
            hours=hours,
            days=days,
            months=months,
            weekdays=frozenset(day % 7 for day in weekdays),
            any_day=fields[2] == "*",
            any_weekday=fields[4] == "*",
        )
        if expression.any_weekday and not any(day <= _DAYS_IN_MONTH[month - 1] for day in days for month in months):
            raise CronError(text, "no month of those has such a day: it would never fire")
        return expression

    def _day_matches(self, when: datetime) -> bool:
        weekday = (when.weekday() + 1) % 7  # Monday is 0 in Python, 1 in cron
        if self.any_day or self.any_weekday:
            return when.day in self.days and weekday in self.weekdays
        return when.day in self.days or weekday in self.weekdays

    def _next_local(self, start: datetime) -> datetime:
        """The first naive local time at or after `start` (a whole minute) that matches."""
        when = start
        limit = start.year + _HORIZON_YEARS
        while when.year <= limit:
            if when.month not in self.months:
                year, month = (when.year + 1, 1) if when.month == 12 else (when.year, when.month + 1)
                when = datetime(year, month, 1)
            elif not self._day_matches(when):
                when = datetime(when.year, when.month, when.day) + timedelta(days=1)
            elif when.hour not in self.hours:
                when = when.replace(minute=0) + timedelta(hours=1)
            elif when.minute not in self.minutes:
                when += _MINUTE
            else:
                return when
        raise CronError(self.text, f"no tick within {_HORIZON_YEARS} years")

    def next_after(self, after: datetime, tz: tzinfo = timezone.utc) -> datetime:
        """Return the first tick strictly after `after`, as an aware datetime in `tz`.

        Args:
            after: an aware datetime.
            tz: the time zone the expression's wall-clock times are in.

        Raises:
            ValueError: `after` is naive.
            CronError: no tick comes within 30 years.
        """
        if after.tzinfo is None or after.utcoffset() is None:
            raise ValueError("after must be an aware datetime")
        local = after.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0) + _MINUTE
        while True:
            candidate = self._next_local(local)
            instant = _instant(candidate, tz)
            if instant > after:
                return instant
            local = candidate + _MINUTE  # a repeated local time, seen for the second time

    def ticks_between(self, start: datetime, end: datetime, tz: tzinfo = timezone.utc) -> list[datetime]:
        """Every tick strictly after `start` and at or before `end`, oldest first.

        Raises:
            ValueError: `start` or `end` is naive.
        """
        ticks: list[datetime] = []
        tick = self.next_after(start, tz)
        while tick <= end:
            ticks.append(tick)
            tick = self.next_after(tick, tz)
        return ticks

    def __str__(self) -> str:
        return self.text


def _exists(local: datetime, tz: tzinfo) -> bool:
    aware = local.replace(tzinfo=tz)
    return aware.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None) == local


def _instant(local: datetime, tz: tzinfo) -> datetime:
    """The instant of a naive local time: its first occurrence, or the end of the gap it falls in."""
    while not _exists(local, tz):
        local += _MINUTE
    return local.replace(tzinfo=tz, fold=0)
