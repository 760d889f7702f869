"""The `Store` interface: where an engine journals its executions.

A store keeps one row per workflow execution and one row per task of it.
The engine's journal (`tukio.store.journal`) serializes the data (events,
inputs, outputs) with the store's `serializer` on the event loop and hands the
store ready-made records; a store only has to keep them and give reports back.
"""

from __future__ import annotations

import abc
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from tukio._report import iso, parse_time
from tukio.errors import DamagedRecordError, UnknownVersionError

if TYPE_CHECKING:
    from tukio.store._admin import Admin

__all__ = [
    "ExecutionInfo",
    "ExecutionRecord",
    "JSONSerializer",
    "Record",
    "Serializer",
    "Store",
    "TaskEventRecord",
    "TaskRecord",
    "build_report",
    "execution_info",
    "iso",
    "parse_states",
    "parse_time",
]

#: The state of an execution that has not ended.
UNFINISHED = "pending"
#: The state of an execution waiting in the durable queue of flow control (see `tukio.flow.shared`).
QUEUED = "queued"

_S = TypeVar("_S", bound="Store")


class Serializer(Protocol):
    """Turns the data of executions into text (or bytes) and back."""

    def dumps(self, value: Any) -> str | bytes:
        """Return the serialized form of `value`; raise when it cannot be stored."""

    def loads(self, data: str | bytes) -> Any:
        """Return the value `data` was made from."""


def _encode_time(value: Any) -> Any:
    """Encode datetimes, dates and times as ISO 8601 text; refuse anything else."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class JSONSerializer:
    """The default serializer: strict JSON (tuples come back as lists).

    Datetimes, dates and times (a join's report holds some) are stored as
    ISO 8601 text and come back as strings.

    Args:
        default: called for objects JSON cannot encode (see `json.dumps`);
            without it datetimes become ISO text and other objects raise
            `TypeError`.
    """

    def __init__(self, default: Any = None) -> None:
        self._encoder = json.JSONEncoder(separators=(",", ":"), default=default or _encode_time)
        self._decoder = json.JSONDecoder()
        self._one_shot = self._make_one_shot()

    def _make_one_shot(self) -> Callable[[Any, int], Any] | None:
        """The C encoder `json` builds anew for every `JSONEncoder.encode` call, built once.

        Building it is most of the cost of encoding a small entry (a journal
        encodes one per task). None when this Python has no C accelerator.
        """
        make = getattr(json.encoder, "c_make_encoder", None)
        if make is None:  # pragma: no cover - CPython always has _json
            return None
        enc = self._encoder
        try:
            return make(  # type: ignore[no-any-return]
                {},  # the markers of circular references: emptied by every successful call
                enc.default,
                json.encoder.encode_basestring_ascii,
                None,
                enc.key_separator,
                enc.item_separator,
                enc.sort_keys,
                enc.skipkeys,
                enc.allow_nan,
            )
        except TypeError:  # pragma: no cover - another signature: use the public path
            return None

    def dumps(self, value: Any) -> str:
        """Encode `value` as compact JSON.

        Raises:
            TypeError: `value` holds an object JSON cannot encode.
            ValueError: `value` holds a circular reference.
        """
        one_shot = self._one_shot
        if one_shot is None or isinstance(value, str):
            return self._encoder.encode(value)
        try:
            return "".join(one_shot(value, 0))
        except BaseException:
            # A failed call may leave markers behind: the next call gets a clean encoder.
            self._one_shot = self._make_one_shot()
            raise

    def loads(self, data: str | bytes) -> Any:
        """Decode JSON text."""
        return self._decoder.decode(data.decode() if isinstance(data, bytes) else data)


class ExecutionRecord(NamedTuple):
    """One write about a workflow execution (an upsert).

    `template` and `event` are None in later writes: the store keeps what it has.
    `version` is the id of the template's version (`WorkflowTemplate.version`):
    a store keeps one copy of the template per version (the first `template`
    written with it), not one per execution.
    """

    exec_id: str
    template_id: str | None
    state: str
    start: str | None
    end: str | None = None
    error: str | None = None
    template: str | bytes | None = None
    event: str | bytes | None = None
    version: str | None = None


class TaskRecord(NamedTuple):
    """One write about a task of an execution (an upsert on exec_id + task_id).

    `data` is the serialized ``{'inputs', 'outputs', ...}`` of the report entry.
    (A named tuple: a task end makes one, and they are cheaper than dataclasses.)
    """

    exec_id: str
    task_id: str
    task_exec_id: str | None
    state: str
    start: str | None
    end: str | None
    data: str | bytes
    error: str | None = None


class TaskEventRecord(NamedTuple):
    """An event a running task received (journaled before the task gets it), or a new attempt's mark.

    `seq` orders the events of one task (1, 2, ...). `data` is the
    serialized ``[data, topic, source]`` of the event. With `data` None:
    when `error` is None too, the task started a new attempt (a retry): the
    store forgets its events numbered below `seq`; else the store refused the
    event (`error` says why) and a re-run skips it.
    """

    exec_id: str
    task_id: str
    seq: int
    data: str | bytes | None
    error: str | None = None


Record = ExecutionRecord | TaskRecord | TaskEventRecord


@dataclass(frozen=True)
class ExecutionInfo:
    """A summary of one execution, as `Store.executions` lists it.

    `problem` says why the execution cannot be read in full (a damaged row:
    its unreadable fields are None), or, in `Engine.unrecovered`, why it was
    not resumed; it is None otherwise. `version` is the version of the
    template the execution is pinned to (None for one journaled before
    versions were kept).
    """

    exec_id: str
    template_id: str | None
    state: str
    start: datetime | None
    end: datetime | None
    error: str | None = None
    problem: str | None = None
    version: str | None = None

    @property
    def finished(self) -> bool:
        """True once the execution ended (in any state)."""
        return self.state != UNFINISHED and self.state != QUEUED


def execution_info(
    exec_id: Any, template_id: Any, state: Any, start: Any, end: Any, error: Any = None, version: Any = None
) -> ExecutionInfo:
    """Summarise an execution from the columns a store kept, whatever shape they are in.

    A field that is not what the journal writes (text that is not UTF-8, a
    time that is not ISO 8601) does not raise: it is named in `problem`.
    """
    problems: list[str] = []

    def as_text(name: str, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        problems.append(f"{name} is not text: {_short(value)}")
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    def as_time(name: str, value: Any) -> datetime | None:
        try:
            return _time(value, name)
        except ValueError as exc:
            problems.append(str(exc))
            return None

    info = ExecutionInfo(
        as_text("exec_id", exec_id),
        as_text("template_id", template_id),
        as_text("state", state),
        as_time("start", start),
        as_time("end", end),
        as_text("error", error),
        version=as_text("version", version),
    )
    return replace(info, problem="; ".join(problems)) if problems else info


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _time(value: Any, name: str) -> datetime | None:
    """Parse a time the journal wrote.

    Raises:
        ValueError: `value` is not an ISO 8601 string ("NAME is not an ISO time: ...").
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{name} is not an ISO time: {_short(value)}")


def parse_states(state: str | Iterable[str] | None) -> frozenset[str] | None:
    """Normalise the `state` filter of `Store.executions`."""
    if state is None:
        return None
    return frozenset((state,) if isinstance(state, str) else state)


def build_report(
    serializer: Serializer,
    execution: ExecutionRecord,
    tasks: Iterable[TaskRecord],
) -> dict[str, Any]:
    """Rebuild a `Workflow.report()` from what a store kept.

    The report is the template's dict plus ``'exec'`` (with 'event': the
    triggering data, 'version': the template version, and 'error' when the
    workflow failed); each task dict
    gets its ``'exec'`` entry, or None when it never started.

    Raises:
        DamagedRecordError: a field cannot be read back or does not have
            the shape the journal writes (naming the execution and the field).
    """
    exec_id = execution.exec_id
    try:
        return _report(serializer, execution, tasks)
    except _Damaged as damaged:
        raise DamagedRecordError(exec_id, str(damaged)) from damaged.__cause__


class _Damaged(Exception):
    """A field of a record is unreadable (the message says which and why)."""


def _decode(serializer: Serializer, blob: Any, what: str, must_be_dict: bool = True) -> Any:
    try:
        value = serializer.loads(blob)
    except Exception as exc:
        raise _Damaged(f"{what} cannot be read: {type(exc).__name__}: {_short_text(exc)}") from exc
    if must_be_dict and not isinstance(value, dict):
        raise _Damaged(f"{what} must be an object, got {type(value).__name__}")
    return value


def _short_text(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else f"{text[:197]}..."


def _parsed(value: Any, what: str) -> datetime | None:
    try:
        return _time(value, what)
    except ValueError as exc:
        raise _Damaged(str(exc)) from None


def _report(serializer: Serializer, execution: ExecutionRecord, tasks: Iterable[TaskRecord]) -> dict[str, Any]:
    if execution.template is None and execution.version is not None:
        raise _Damaged(f"its template version {execution.version} is not in the store")
    template: dict[str, Any] = (
        _decode(serializer, execution.template, "template")
        if execution.template is not None
        else {"id": execution.template_id}
    )
    task_list = template.get("tasks", [])
    if not isinstance(task_list, list) or not all(isinstance(t, dict) for t in task_list):
        raise _Damaged("template: 'tasks' must be a list of objects")
    report = dict(template)
    report["exec"] = {
        "id": execution.exec_id,
        "start": _parsed(execution.start, "start"),
        "end": _parsed(execution.end, "end"),
        "state": execution.state,
        "event": (
            _decode(serializer, execution.event, "triggering data", must_be_dict=False)
            if execution.event is not None
            else None
        ),
        "version": execution.version,
    }
    if execution.error is not None:
        report["exec"]["error"] = execution.error
    entries: dict[str, dict[str, Any]] = {}
    for row in tasks:
        where = f"task {row.task_id}"
        entry: dict[str, Any] = {
            "id": row.task_exec_id,
            "start": _parsed(row.start, f"{where}: start"),
            "end": _parsed(row.end, f"{where}: end"),
            "state": row.state,
        }
        entry.update(_decode(serializer, row.data, f"{where}: data"))
        attempts = entry.get("attempts") or []
        if not isinstance(attempts, list) or not all(isinstance(a, dict) for a in attempts):
            raise _Damaged(f"{where}: attempts must be a list of objects")
        for n, attempt in enumerate(attempts, 1):
            attempt["start"] = _parsed(attempt.get("start"), f"{where}: attempt {n}: start")
            attempt["end"] = _parsed(attempt.get("end"), f"{where}: attempt {n}: end")
        if row.error is not None:
            entry["error"] = row.error
        entries[str(row.task_id)] = entry
    task_dicts = [dict(t) for t in task_list]
    for task_dict in task_dicts:
        task_dict["exec"] = entries.pop(str(task_dict.get("id")), None)
    report["tasks"] = task_dicts
    return report


#: A journaled event a store could not keep (see `TaskEventRecord`): a re-run skips it.
LOST_EVENT: Any = object()


def task_events(
    serializer: Serializer, exec_id: str, rows: Iterable[tuple[Any, Any, Any, Any]]
) -> dict[str, list[tuple[int, Any]]]:
    """Decode the journaled events of an execution's tasks (see `Store.task_events`).

    Args:
        serializer: the store's serializer.
        exec_id: the execution (named in errors).
        rows: ``(task_id, seq, data, error)`` as the store kept them, in any order.

    Returns:
        By task id, ``(seq, [data, topic, source])`` in order (with the
        event's id as a fourth item in a shared store, or a listening mark,
        see `tukio.store._catchup`); a lost event (data None, `error` set)
        is `LOST_EVENT`.

    Raises:
        DamagedRecordError: an event cannot be read back.
    """
    found: dict[str, list[tuple[int, Any]]] = {}
    for task_id, seq, data, error in sorted(rows, key=lambda r: (str(r[0]), int(r[1]))):
        if data is None:
            if error is None:
                continue  # a mark that another store kept as a row: nothing to replay
            payload = LOST_EVENT
        else:
            try:
                payload = serializer.loads(data)
            except Exception as exc:
                raise DamagedRecordError(
                    exec_id, f"task {task_id}: event {seq} cannot be read: {type(exc).__name__}: {_short_text(exc)}"
                ) from exc
            # [data, topic, source], with the event's id in a shared store; or where the shared
            # events stood when the task started listening (see `tukio.store._catchup`).
            if not isinstance(payload, (list, tuple)) or len(payload) not in (3, 4):
                raise DamagedRecordError(exec_id, f"task {task_id}: event {seq} must be [data, topic, source, (id)]")
        found.setdefault(str(task_id), []).append((int(seq), payload))
    return found


class Store(abc.ABC):
    """Keeps the journal of workflow executions.

    Implementations must be safe to call from two threads (the engine writes
    from its journal thread while the application lists or loads). Every
    method may do I/O: from a coroutine, call them through
    `asyncio.to_thread` when that matters.

    Args:
        serializer: encodes data for storage (`JSONSerializer` when None).
    """

    #: True when writes may wait for a disk or a lock: the journal then
    #: commits from a thread, unless `write_nowait` says it can do better.
    blocking = True
    #: True when the store keeps the events running tasks receive (`TaskEventRecord`):
    #: the journal then writes each one before the task gets it, and a task
    #: re-run by `Engine.recover` (or a takeover) receives them again.
    keeps_events = False

    def __init__(self, serializer: Serializer | None = None) -> None:
        self.serializer: Serializer = serializer if serializer is not None else JSONSerializer()

    @abc.abstractmethod
    def write(self, records: Sequence[Record]) -> None:
        """Apply `records` in order, all or nothing (one transaction).

        Raises:
            Exception: the write failed; nothing of `records` was kept.
        """

    def write_nowait(self, records: Sequence[Record]) -> bool:
        """Apply `records` now if that cannot wait for a disk or a lock; else do nothing.

        The journal calls it on the event loop and falls back to `write` on a
        thread when it returns False. The default writes only when `blocking`
        is False.

        Returns:
            True when `records` were applied, False when nothing was tried.

        Raises:
            Exception: the write was tried and failed; nothing of `records` was kept.
        """
        if self.blocking:
            return False
        self.write(records)
        return True

    def write_soon(self, records: Sequence[Record], done: Callable[[BaseException | None], None]) -> bool:
        """Start applying `records` from the running loop, without blocking it.

        A store that talks to its database asynchronously (`PostgresStore`)
        commits batches in the order they were given (an empty one too: its
        `done` runs after the earlier ones') and calls `done` on the loop
        with None, or the write error. The journal tries this first; the
        default declines.

        Returns:
            True when the store took `records` (and will call `done`), False
            when nothing was tried.
        """
        return False

    @abc.abstractmethod
    def executions(
        self, *, state: str | Iterable[str] | None = None, template_id: str | None = None
    ) -> list[ExecutionInfo]:
        """List executions, oldest first.

        Args:
            state: keep only executions in this state (or these states);
                ``'pending'`` selects the unfinished ones.
            template_id: keep only executions of this template.

        Returns:
            A summary of each execution; a damaged row is listed too, with
            its `ExecutionInfo.problem` set.
        """

    @abc.abstractmethod
    def load(self, exec_id: str) -> dict[str, Any]:
        """Return the report of one execution (see `build_report`).

        Raises:
            KeyError: no execution has that id.
            DamagedRecordError: a record of it cannot be read back.
        """

    @abc.abstractmethod
    def prune(self, *, before: datetime | None = None, template_id: str | None = None) -> int:
        """Delete finished executions (any state but 'pending').

        Args:
            before: delete only those that ended before this time (aware datetime).
            template_id: delete only executions of this template.

        Returns:
            How many executions were deleted.
        """

    def task_events(self, exec_id: str) -> dict[str, list[tuple[int, Any]]]:
        """The events journaled for the tasks of an execution (see `keeps_events`).

        Returns:
            By task id, ``(seq, [data, topic, source])`` in the order the
            task received them (only those of its last attempt); empty for a
            store that keeps none.

        Raises:
            DamagedRecordError: an event cannot be read back.
        """
        return {}

    # -- template versions (see `WorkflowTemplate.version`) -------------------------------
    def versions(self, template_id: str | None = None) -> dict[str, str | None]:
        """The template versions the store keeps, oldest first.

        Args:
            template_id: keep only the versions of this template.

        Returns:
            Each version id, with the id of its template.
        """
        return {version: tid for version, tid, _ in self.version_rows(template_id=template_id)}

    def template_version(self, version: str) -> dict[str, Any]:
        """The JSON object of the template stored under `version`.

        Raises:
            UnknownVersionError: the store keeps no version with that id.
            DamagedRecordError: the stored template cannot be read back.
        """
        rows = self.version_rows(version=version)
        if not rows:
            raise UnknownVersionError(version)
        try:
            found: dict[str, Any] = _decode(self.serializer, rows[0][2], f"template version {version}")
        except _Damaged as damaged:
            raise DamagedRecordError(f"(template version {version})", str(damaged)) from damaged.__cause__
        return found

    def version_rows(
        self, *, template_id: str | None = None, version: str | None = None
    ) -> list[tuple[str, str | None, str | bytes]]:
        """The stored template versions as kept: ``(version, template_id, serialized template)``, oldest first.

        Args:
            template_id: keep only the versions of this template.
            version: keep only this version.

        A store that keeps no versions (one written before them) returns none.
        """
        return []

    def repin(self, exec_id: str, version: str, template: str | bytes, renames: dict[str, str]) -> None:
        """Pin an unfinished execution to another template version, in one transaction.

        The low-level step of `tukio.store.migrate`: it checks nothing of
        the templates themselves.

        Args:
            exec_id: the execution.
            version: the version it runs on from now on.
            template: that version's serialized template (kept if the store
                has no copy of it yet).
            renames: old task id -> new task id, for the task records (and
                their journaled events) that move; the records of the other
                tasks are deleted.

        Raises:
            KeyError: no unfinished execution has that id.
            NotImplementedError: the store cannot move executions.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot move executions to another template version")

    def admin(self) -> Admin | None:
        """The queries and actions `tukio.manage` needs from this store; None when it offers none.

        The stores of tukio all offer them; another store may return None
        (`tukio.manage.Manager` then refuses it).
        """
        return None

    def unfinished(self) -> list[ExecutionInfo]:
        """List the executions that have not ended (what `Engine.recover` resumes)."""
        return self.executions(state=UNFINISHED)

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the store's resources (no-op by default)."""

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def attach_name(store: object, current: str | None, node: str | None, lease: float) -> str:
    """Check the arguments of a store's ``attach`` and return the node's name.

    Shared by the stores that can share their journal (SQLite, PostgreSQL).

    Args:
        store: the store (named in the error).
        current: the node the store already writes for, or None.
        node: the node's name asked for (a new unique id when None).
        lease: seconds a node stays alive without a heartbeat.

    Raises:
        ValueError: `lease` is not positive, or the node name is empty.
        RuntimeError: the store already writes for another node.
    """
    if lease <= 0:
        raise ValueError(f"lease must be a positive number of seconds, got {lease!r}")
    if node is not None and not node:
        raise ValueError("node must not be empty")
    name = node if node is not None else f"node-{uuid.uuid4().hex[:12]}"
    if current is not None and current != name:
        raise RuntimeError(f"{store!r} already writes for node {current!r}")
    return name
