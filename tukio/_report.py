"""The shapes of reports and journal entries, and the helpers every producer shares.

A workflow report is the template's dict plus ``'exec'`` (`ExecInfo`); each
task dict gains ``'exec'``: a `TaskEntry`, or None when the task never
started. The workflow builds entries (`task_entry`), the journal stores them
(`iso` for times, `storable` for text), stores give them back
(`parse_time`), rescue and graph read them: all through this module.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from tukio.task.task import TukioTask

__all__ = [
    "NO_REPORT",
    "ExecInfo",
    "TaskEntry",
    "describe_error",
    "failure_entry",
    "holder_report",
    "iso",
    "iso_from_timestamp",
    "iso_now",
    "parse_time",
    "storable",
    "task_entry",
    "utc",
]

log = logging.getLogger("tukio.workflow")


class TaskEntry(TypedDict, total=False):
    """The ``'exec'`` entry of one task in a report."""

    id: str | None
    start: datetime | None
    end: datetime | None
    state: str
    inputs: Any
    outputs: Any
    reporting: Any
    error: str
    attempts: list[dict[str, Any]]


class ExecInfo(TypedDict, total=False):
    """The ``'exec'`` entry of a workflow report ('event' and 'error' from a store).

    'version' is the template version the execution runs on (`WorkflowTemplate.version`).
    """

    id: str
    start: datetime | None
    end: datetime | None
    state: str
    version: str | None
    event: Any
    error: str


# -- text --------------------------------------------------------------------------------
def describe_error(exc: BaseException) -> str:
    """One line naming an exception: ``ValueError: boom`` (or just ``ValueError``)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def storable(text: str) -> str:
    """Return `text` in a form any UTF-8 store can keep.

    Lone surrogates (what `os.fsdecode` makes of a file name that is not
    UTF-8) cannot be encoded; they become ``\\udcff`` escapes.
    """
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


# -- time --------------------------------------------------------------------------------
def utc(timestamp: float | None) -> datetime | None:
    """Turn a `time.time()` value into an aware UTC datetime."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc)


def iso(value: datetime | None) -> str | None:
    """Write a time as the journal stores it (sortable ISO 8601, UTC, microseconds)."""
    if value is None:
        return None
    if value.tzinfo is not timezone.utc:
        value = value.astimezone(timezone.utc)
    # The same text either way: without `timespec` (faster), microseconds are left out only when 0.
    return value.isoformat() if value.microsecond else value.isoformat(timespec="microseconds")


# The last whole second `iso_from_timestamp` wrote, and its text up to the seconds (one
# tuple, replaced at once: a reader in another thread sees a matching pair).
_second: tuple[float, str] = (math.nan, "")


def iso_from_timestamp(timestamp: float | None) -> str | None:
    """`iso` of a `time.time()` value, without making a datetime (the journal writes two per task).

    The microseconds are rounded as `datetime.fromtimestamp` rounds them
    (half to even), so the text is the same as ``iso(utc(timestamp))``; the
    date and time of the whole second are made once per second.
    """
    global _second
    if timestamp is None:
        return None
    frac, whole = math.modf(timestamp)
    micros = round(frac * 1e6)
    if micros >= 1_000_000:
        whole += 1.0
        micros -= 1_000_000
    elif micros < 0:
        whole -= 1.0
        micros += 1_000_000
    second = _second
    if second[0] != whole:
        # "YYYY-MM-DDTHH:MM:SS+00:00" without its offset.
        second = _second = (whole, datetime.fromtimestamp(whole, timezone.utc).isoformat()[:-6])
    return f"{second[1]}.{micros:06d}+00:00"


def iso_now() -> str | None:
    """The time now as the journal writes it (`iso_from_timestamp` of ``time.time()``)."""
    return iso_from_timestamp(time.time())


def parse_time(value: Any) -> datetime | None:
    """Read a time back: a datetime, or an ISO 8601 string (``Z`` accepted); else None."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            return None
    return None


# -- entries -----------------------------------------------------------------------------
#: What `holder_report` returns when the task's holder has no ``report()``.
NO_REPORT: Any = object()


def holder_report(task: TukioTask, log_prefix: str) -> Any:
    """The entry's 'reporting': what the task's holder's ``report()`` returns (`NO_REPORT` when none).

    A ``report()`` that raises gives its error text (logged): one failing
    report must not fail the report (or the journal) of anything else.
    """
    holder = task.holder
    reporter = getattr(holder, "report", None) if holder is not None else None
    if not callable(reporter):
        return NO_REPORT
    try:
        return reporter()
    except Exception as exc:
        log.warning("%s: report() failed: %s", log_prefix, describe_error(exc))
        return f"report() failed: {describe_error(exc)}"


def failure_entry(inputs: Any, error: str) -> dict[str, Any]:
    """The entry of a task that could not be created."""
    now = utc(time.time())
    return {
        "id": None,
        "start": now,
        "end": now,
        "state": "exception",
        "inputs": inputs,
        "outputs": None,
        "error": error,
    }


def task_entry(
    task: TukioTask | None,
    override: dict[str, Any] | None,
    attempts: list[dict[str, Any]] | None,
    log_prefix: str,
) -> dict[str, Any] | None:
    """Build a task's report entry.

    Args:
        task: the latest attempt of the task (None if none was created).
        override: keys that replace the task's (a failure recorded by the
            workflow), or the whole entry when there is no task.
        attempts: the failed attempts before this one.
        log_prefix: names the workflow and task in the log.

    Returns:
        The entry, or None when there is neither a task nor an override.
    """
    if task is not None:
        entry = task.as_dict()
        if task.holder is not None:
            reporting = holder_report(task, log_prefix)
            if reporting is not NO_REPORT:
                entry["reporting"] = reporting
        if task.error is not None:  # known once the task's end is recorded, before it is done()
            entry["error"] = describe_error(task.error)
        if override is not None:
            entry.update(override)
    elif override is not None:
        entry = dict(override)
    else:
        return None
    if attempts:
        entry["attempts"] = attempts
    return entry
