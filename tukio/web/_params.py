"""The query parameters of ``GET /api/executions``, checked: a bad one is named in a 400."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from tukio.errors import TukioError
from tukio.manage import MAX_LIMIT, STATES

__all__ = ["BadParameter", "list_filters"]

_TEXT = ("template", "version", "node", "after")
_KNOWN = frozenset({"state", "failed", "since", "until", "limit", *_TEXT})


class BadParameter(TukioError, ValueError):
    """A query parameter has a value the API cannot use.

    Args:
        name: the parameter.
        problem: what is wrong with its value.
    """

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"query parameter {name!r}: {problem}")
        self.name = name


def _boolean(name: str, value: str) -> bool:
    match value.lower():
        case "true" | "1" | "yes":
            return True
        case "false" | "0" | "no":
            return False
    raise BadParameter(name, f"{value!r} is not a boolean (true or false)")


def _time(name: str, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadParameter(name, f"{value!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _limit(value: str) -> int:
    try:
        limit = int(value)
    except ValueError:
        raise BadParameter("limit", f"{value!r} is not an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadParameter("limit", f"{limit} is not between 1 and {MAX_LIMIT}")
    return limit


def _states(values: list[str]) -> list[str]:
    states = [state for value in values for state in value.split(",") if state]
    for state in states:
        if state not in STATES:
            raise BadParameter("state", f"{state!r} is not one of {', '.join(STATES)}")
    return states


def list_filters(query: Mapping[str, str], states: list[str]) -> dict[str, Any]:
    """Return the keyword arguments of `Manager.list` from a request's query.

    Args:
        query: the query parameters (the last value of each).
        states: every value given to ``state`` (it may be repeated, or comma-separated).

    Returns:
        The filters, only those given.

    Raises:
        BadParameter: a parameter is unknown, or its value is unusable.
    """
    for name in query:
        if name not in _KNOWN:
            raise BadParameter(name, f"unknown (known: {', '.join(sorted(_KNOWN))})")
    filters: dict[str, Any] = {name: query[name] for name in _TEXT if query.get(name)}
    if states:
        chosen = _states(states)
        filters["state"] = chosen[0] if len(chosen) == 1 else chosen
    if "failed" in query:
        filters["failed"] = _boolean("failed", query["failed"])
    for name in ("since", "until"):
        if name in query:
            filters[name] = _time(name, query[name])
    if "limit" in query:
        filters["limit"] = _limit(query["limit"])
    return filters
