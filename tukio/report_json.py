"""Workflow reports as JSON: datetimes in ISO 8601, exceptions as strings.

`Workflow.report()` returns plain dicts holding `datetime` objects, and a
task's inputs and outputs may hold anything its code put there, so
``json.dumps(workflow.report())`` fails. `dumps_report` (also exported as
``tukio.dumps_report``) turns any such value into JSON text that can always be
written, then read back with `json.loads` (and rendered by `tukio.graph` or
``tukio graph --report``)::

    text = tukio.dumps_report(workflow.report())
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import uuid
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any

from tukio._report import describe_error
from tukio.event import Event, EventSource

__all__ = ["describe_exception", "dumps_report", "to_jsonable"]

#: One line naming an exception (the same helper as everywhere in tukio).
describe_exception = describe_error

_CYCLE = "<cycle>"


def to_jsonable(value: Any) -> Any:
    """Return a copy of `value` made only of JSON types.

    Datetimes, dates and times become ISO 8601 strings, exceptions
    ``Type: message``, events their data, enums their value, sets and tuples
    lists, non-finite floats strings, dict keys strings; anything else its
    ``repr``. A container met again inside itself becomes ``"<cycle>"``.
    """
    return _convert(value, set())


def _convert(value: Any, active: set[int]) -> Any:
    match value:
        case None | bool() | int() | str():
            # Enum members that are also str/int keep their plain value.
            return value.value if isinstance(value, enum.Enum) else value
        case float():
            return value if math.isfinite(value) else str(value)
        case dt.datetime() | dt.date() | dt.time():
            return value.isoformat()
        case dt.timedelta():
            return value.total_seconds()
        case BaseException():
            return describe_exception(value)
        case enum.Enum():
            return _convert(value.value, active)
        case uuid.UUID() | PurePath():
            return str(value)
        case bytes() | bytearray():
            return bytes(value).decode("utf-8", errors="replace")
        case Event():
            return _container(value, active, lambda: _convert(value.data, active))
        case EventSource():
            return value.as_dict()
        case Mapping():
            return _container(value, active, lambda: {_key(k): _convert(v, active) for k, v in value.items()})
        case list() | tuple() | set() | frozenset():
            items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
            return _container(value, active, lambda: [_convert(v, active) for v in items])
        case _ if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return _container(
                value,
                active,
                lambda: {f.name: _convert(getattr(value, f.name), active) for f in dataclasses.fields(value)},
            )
        case _:
            return repr(value)


def _container(value: Any, active: set[int], build: Callable[[], Any]) -> Any:
    key = id(value)
    if key in active:
        return _CYCLE
    active.add(key)
    try:
        return build()
    finally:
        active.discard(key)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key.value if isinstance(key, enum.Enum) else key
    converted = _convert(key, set())
    return converted if isinstance(converted, str) else json.dumps(converted)


def dumps_report(report: Any, *, indent: int | None = 2) -> str:
    """Return `report` (a `Workflow.report()` or any value) as JSON text.

    Args:
        report: what to serialise; see `to_jsonable` for the conversions.
        indent: JSON indentation (None for one line).

    Returns:
        The JSON text, without a trailing newline.
    """
    return json.dumps(to_jsonable(report), indent=indent, ensure_ascii=False)
