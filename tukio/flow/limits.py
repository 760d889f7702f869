"""The flow-control settings of a template, as the JSON holds them, and their checks.

The template keeps these JSON values as they are (`WorkflowTemplate.concurrency`,
`concurrency_key`, `rate`, `schedule`); `tukio._validation` checks them with
`check_flow`, the one place every template goes through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tukio.flow.cron import CronError, CronExpression

__all__ = [
    "CATCH_UP",
    "FLOW_KEYS",
    "RateSpec",
    "ScheduleSpec",
    "check_flow",
    "describe_value",
    "load_zone",
]

#: The template keys of flow control, in the order `as_dict` writes them.
FLOW_KEYS = ("concurrency", "concurrency_key", "rate", "schedule")
#: What a schedule does with the ticks missed while no engine ran.
CATCH_UP = ("none", "last", "all")
_RATE_KEYS = ("limit", "period")
_SCHEDULE_KEYS = ("cron", "timezone", "catch_up", "data")


class RateSpec(TypedDict):
    """``"rate"``: at most `limit` starts in any `period` seconds (a sliding window)."""

    limit: int
    period: float


class _ScheduleRequired(TypedDict):
    cron: str


class ScheduleSpec(_ScheduleRequired, total=False):
    """``"schedule"``: fire the template at each tick of `cron` in `timezone` (UTC by default).

    `catch_up` ("none", "last" or "all"; "none" by default) says which ticks
    missed while no engine ran fire on start; `data` is the trigger data of
    each firing (``{}`` by default; the tick is added as ``"tick"``).
    """

    timezone: str
    catch_up: str
    data: dict[str, Any] | None


def load_zone(name: str) -> ZoneInfo:
    """Return the time zone named `name` (an IANA name such as ``Europe/Paris``).

    Raises:
        ValueError: no such time zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def describe_value(value: Any) -> str:
    """`repr(value)` cut to 40 characters (an integer too long to write is described)."""
    try:
        text = repr(value)
    except ValueError:
        return "an integer too long to write"
    return text if len(text) <= 40 else f"{text[:37]}..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(value: Any, *, integer: bool) -> str | None:
    """Why `value` is not a positive integer (or a positive finite number), or None."""
    if integer and _is_int(value) and value > 0:
        return None
    if not integer and isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e300:
        return None
    return f"must be a positive {'integer' if integer else 'number'}, got {describe_value(value)}"


def _unknown(d: Mapping[str, Any], known: tuple[str, ...], where: str) -> list[tuple[str, str]]:
    return [(f"{where}.{key}", f"unknown field (expected one of {', '.join(known)})") for key in d if key not in known]


def _check_rate(rate: Any) -> list[tuple[str, str]]:
    if not isinstance(rate, Mapping):
        return [("rate", f"must be an object {{limit, period}}, got {_type(rate)}")]
    out = _unknown(rate, _RATE_KEYS, "rate")
    for key, integer in (("limit", True), ("period", False)):
        if key not in rate:
            out.append(("rate", f"{key!r} is required"))
        else:
            reason = _positive(rate[key], integer=integer)
            if reason is not None:
                out.append((f"rate.{key}", reason))
    return out


def _check_schedule(schedule: Any) -> list[tuple[str, str]]:
    if not isinstance(schedule, Mapping):
        return [("schedule", f"must be an object {{cron, timezone, catch_up, data}}, got {_type(schedule)}")]
    out = _unknown(schedule, _SCHEDULE_KEYS, "schedule")
    cron = schedule.get("cron")
    if cron is None:
        out.append(("schedule", "'cron' is required"))
    elif not isinstance(cron, str):
        out.append(("schedule.cron", f"must be a string, got {_type(cron)}"))
    else:
        try:
            CronExpression.parse(cron)
        except CronError as exc:
            out.append(("schedule.cron", str(exc)))
    zone = schedule.get("timezone", "UTC")
    if not isinstance(zone, str):
        out.append(("schedule.timezone", f"must be a string, got {_type(zone)}"))
    else:
        try:
            load_zone(zone)
        except ValueError as exc:
            out.append(("schedule.timezone", str(exc)))
    catch_up = schedule.get("catch_up", "none")
    if catch_up not in CATCH_UP:
        out.append(("schedule.catch_up", f"must be one of {', '.join(CATCH_UP)}, got {describe_value(catch_up)}"))
    data = schedule.get("data")
    if data is not None and not isinstance(data, Mapping):
        out.append(("schedule.data", f"must be an object, got {_type(data)}"))
    return out


def check_flow(d: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Check the flow-control keys of a template dict.

    Returns:
        ``(where, message)`` for each problem (empty when they are all right
        or absent).
    """
    out: list[tuple[str, str]] = []
    concurrency = d.get("concurrency")
    if concurrency is not None:
        reason = _positive(concurrency, integer=True)
        if reason is not None:
            out.append(("concurrency", reason))
    key = d.get("concurrency_key")
    if key is not None:
        if not isinstance(key, str) or not key:
            out.append(("concurrency_key", f"must be a non-empty string, got {describe_value(key)}"))
        elif concurrency is None:
            out.append(("concurrency_key", "needs 'concurrency' (the limit that applies per value)"))
    if d.get("rate") is not None:
        out.extend(_check_rate(d["rate"]))
    if d.get("schedule") is not None:
        out.extend(_check_schedule(d["schedule"]))
    return out
