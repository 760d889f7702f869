"""What `tukio.manage` returns: executions, their tasks, pages of them, and nodes."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from tukio.errors import UnknownExecution

__all__ = [
    "ExecutionDetail",
    "ExecutionSummary",
    "NodeInfo",
    "Page",
    "TaskDetail",
    "UnknownExecution",
    "decode_cursor",
    "encode_cursor",
]


def _json_ready(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return [_json_ready(v) for v in value]
    return value


class _Dictable:
    """``as_dict()`` for the dataclasses of this module: their fields, times in ISO 8601."""

    def as_dict(self) -> dict[str, Any]:
        """This object as a JSON-ready dict (times as ISO 8601 text, nested objects as dicts)."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, list):
                value = [v.as_dict() if isinstance(v, _Dictable) else _json_ready(v) for v in value]
            out[f.name] = _json_ready(value)
        return out


@dataclass(frozen=True)
class ExecutionSummary(_Dictable):
    """One execution, as a listing shows it.

    `state` is the workflow's own (as its report says, unchanged since
    tukio 1.1.2: a workflow whose task raised may have 'finished'); `failed`
    says whether the workflow or any of its tasks ended in 'exception' or
    'timeout'; `error` is the workflow's error, else the first failed task's
    (``"task_id: error"``). `node` is the node owning it (None: none, or a
    store of one process).
    """

    id: str
    template: str | None
    version: str | None
    state: str
    failed: bool
    node: str | None
    start: datetime | None
    end: datetime | None
    error: str | None


@dataclass(frozen=True)
class TaskDetail(_Dictable):
    """One task of an execution: what it was given and gave, how it ended.

    `state` is None for a task that never started. `error` is the error the
    journal recorded (its traceback text when the task recorded one);
    `attempts` counts its runs (0: never started); `events` are the data of
    the events it received while running (its last attempt's, on stores that
    keep them); `node` the node owning the execution.
    """

    id: str
    name: str
    state: str | None
    start: datetime | None
    end: datetime | None
    inputs: Any
    outputs: Any
    error: str | None
    attempts: int
    events: list[Any]
    node: str | None


@dataclass(frozen=True)
class ExecutionDetail(ExecutionSummary):
    """One execution with its tasks (in the template's order) and its graph (task id -> successor ids)."""

    tasks: list[TaskDetail]
    graph: dict[str, list[str]]


@dataclass(frozen=True)
class Page:
    """One page of a listing: `next` is the cursor of the following page (None: this one is the last)."""

    items: list[ExecutionSummary]
    next: str | None

    def as_dict(self) -> dict[str, Any]:
        """The page as a JSON-ready dict: ``{"items": [...], "next": ...}``."""
        return {"items": [i.as_dict() for i in self.items], "next": self.next}


@dataclass(frozen=True)
class NodeInfo(_Dictable):
    """A node sharing the store: whether it is alive, its epoch, when its lease runs out, what it owns.

    `owned` counts the unfinished executions it owns.
    """

    name: str
    alive: bool
    epoch: int | None
    lease_expires: datetime | None
    owned: int


def encode_cursor(start: str, exec_id: str) -> str:
    """The opaque cursor of the page after the execution (`start`, `exec_id`)."""
    return base64.urlsafe_b64encode(json.dumps([start, exec_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """The ``(start, id)`` key a cursor holds.

    Raises:
        ValueError: `cursor` was not made by `encode_cursor`.
    """
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        key = None
    if not (isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) for k in key)):
        raise ValueError(f"invalid cursor {cursor!r}: pass the 'next' of a page")
    return key[0], key[1]
