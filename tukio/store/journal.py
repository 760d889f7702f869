"""`Journal`: what an engine's workflows do, written to a `Store` in order and in batches.

The journal serializes on the event loop (so a value that cannot be stored is
caught where it is produced, and later mutations cannot tear a record). A
record asked for as *durable* is committed at the end of the current turn of
the loop, together with every other record made in that turn (group commit);
its callback runs once the commit returns. The commit happens on the loop
when the store can do it without blocking (`Store.write_nowait`), otherwise
on a dedicated writer thread; batches are committed in the order they were
made either way. Records nobody waits for ride along with the next durable
one, or are written after `LAZY_DELAY` at the latest.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from tukio.errors import JournalError
from tukio.store.base import UNFINISHED, ExecutionRecord, Record, Store, TaskRecord, iso

if TYPE_CHECKING:
    from tukio.workflow.template import Plan
    from tukio.workflow.workflow import Workflow

__all__ = ["LAZY_DELAY", "Journal"]

log = logging.getLogger(__name__)

#: Seconds a record that nobody waits for may stay in memory before it is written.
LAZY_DELAY = 0.05
#: Seconds the writer thread waits for work before it exits (it restarts on demand).
IDLE_EXIT = 1.0

#: Called in the loop once a durable record is committed: with None, or the write error.
Then = Callable[[BaseException | None], None]
#: A task's report entry, or a function that makes it when it is written (None: nothing to write).
Entry = dict[str, Any] | Callable[[], dict[str, Any] | None]
_COLUMN_KEYS = frozenset({"id", "start", "end", "state", "error"})


def _resolve(waiters: list[Then], error: BaseException | None) -> None:
    failure = None if error is None else JournalError(f"journal write failed: {error!r}")
    for then in waiters:
        try:
            then(failure)
        except Exception:
            log.exception("journal: a callback failed")


def _now() -> str | None:
    return iso(datetime.now(timezone.utc))


class _Writer:
    """The thread that commits batches for a blocking store, in order."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop
        self._queue: queue.SimpleQueue[tuple[list[Record], list[Then]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, batch: list[Record], waiters: list[Then]) -> None:
        with self._lock:
            self._queue.put((batch, waiters))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tukio-journal", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                batch, waiters = self._queue.get(timeout=IDLE_EXIT)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            # Group commit: whatever queued up while the last commit ran goes in this one.
            while True:
                try:
                    more, more_waiters = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.extend(more)
                waiters.extend(more_waiters)
            done = commit(self._store, batch)
            error = done if isinstance(done, BaseException) else None
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                self._loop.call_soon_threadsafe(_resolve, waiters, error)


def commit(store: Store, batch: list[Record], *, nowait: bool = False) -> bool | BaseException:
    """Write `batch` to `store`; return the error instead of raising it.

    Returns:
        True once written; False when `nowait` and the store declined to
        write without waiting (`Store.write_nowait`); else the write error.
    """
    if not batch:
        return True
    try:
        if nowait:
            return store.write_nowait(batch)
        store.write(batch)
    except Exception as exc:
        log.exception("journal: writing %d record(s) to %r failed", len(batch), store)
        return exc
    return True


class Journal:
    """Records workflow and task transitions of one engine in a `Store`.

    Durable records (task ends, workflow begins) are committed at the end of
    the turn of the loop that made them, with everything else recorded
    meanwhile (group commit): on the loop when the store allows it, else by
    the writer thread, which also folds together batches that queued up
    while it was busy. Other records wait for the next durable one or for
    `LAZY_DELAY`; a later record of the same task replaces a waiting one (a
    batch is committed as a whole, so only the last state matters).

    Args:
        store: where records go.
        loop: the engine's loop (callbacks and timers run there).
    """

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self._loop = loop
        self._dumps: Callable[[Any], str | bytes] = store.serializer.dumps
        self._batch: list[Record] = []
        self._lazy: dict[tuple[str, str], tuple[Workflow, Entry]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._writer: _Writer | None = None
        self._waiters: list[Then] = []
        self._due = False  # a commit is scheduled for the end of this turn
        self._in_thread = 0  # batches handed to the writer thread, not committed yet
        self._templates: dict[str | None, tuple[Plan, str | bytes]] = {}

    # -- batching --------------------------------------------------------------
    def _later(self) -> None:
        # One timer at a time, never cancelled: a submit in between leaves it
        # with nothing to do, which costs less than a timer per record.
        if self._timer is None:
            self._timer = self._loop.call_later(LAZY_DELAY, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._batch or self._lazy:
            self._submit([])

    def _submit(self, waiters: list[Then]) -> None:
        """Commit everything recorded so far at the end of this turn, then call `waiters`."""
        self._waiters.extend(waiters)
        if not self._due:
            self._due = True
            self._loop.call_soon(self._commit)

    def _commit(self) -> None:
        self._due = False
        for (_, tid), (workflow, lazy) in self._lazy.items():
            entry = lazy() if callable(lazy) else lazy
            if entry is not None:
                self._batch.append(self._task(workflow, tid, entry)[0])
        self._lazy.clear()
        batch, self._batch = self._batch, []
        waiters, self._waiters = self._waiters, []
        if self._in_thread == 0:  # else this batch must wait for the earlier ones
            if self.store.write_soon(batch, functools.partial(_resolve, waiters)):
                return  # a network store commits on the loop, in order (see Store.write_soon)
            done = commit(self.store, batch, nowait=True)
            if done is not False:
                _resolve(waiters, None if done is True else done)
                return
        if self._writer is None:
            self._writer = _Writer(self.store, self._loop)
        self._in_thread += 1
        self._writer.submit(batch, [self._landed, *waiters])

    def _landed(self, error: BaseException | None) -> None:
        self._in_thread -= 1

    def flush(self) -> asyncio.Future[None]:
        """Return a future resolved once everything recorded so far is committed.

        The future fails with `JournalError` when the store could not write.
        """
        done: asyncio.Future[None] = self._loop.create_future()

        def then(error: BaseException | None) -> None:
            if not done.done():
                done.set_result(None) if error is None else done.set_exception(error)

        self._submit([then])
        return done

    # -- records ---------------------------------------------------------------
    def _template_blob(self, workflow: Workflow) -> str | bytes:
        """The serialized template (cached while the template does not change)."""
        template = workflow.template
        plan = template.plan()
        cached = self._templates.get(template.uid)
        if cached is None or cached[0] is not plan:
            cached = self._templates[template.uid] = (plan, self._dumps(template.as_dict()))
        return cached[1]

    def workflow_begin(self, workflow: Workflow, data: Any, then: Then) -> str | None:
        """Record that `workflow` starts with the triggering `data`; call `then` once durable.

        Returns:
            None; or the error message when the data (or the template) cannot
            be stored: the execution is then recorded as failed and `then` is
            never called.
        """
        what = "its template"
        try:
            template = self._template_blob(workflow)
            what = f"its triggering data ({type(data).__name__})"
            event = self._dumps(data)
        except Exception as exc:
            error = f"workflow {workflow.template.uid}: {what} cannot be stored: {type(exc).__name__}: {exc}"
            log.error("[%s] %s", workflow.uid, error)
            self._batch.append(ExecutionRecord(workflow.uid, workflow.template.uid, "exception", _now(), _now(), error))
            self._later()
            return error
        self._batch.append(
            ExecutionRecord(workflow.uid, workflow.template.uid, UNFINISHED, _now(), template=template, event=event)
        )
        self._submit([then])
        return None

    def workflow_rescued(self, workflow: Workflow, kept: dict[str, dict[str, Any]]) -> None:
        """Record that `workflow` was rebuilt from a report, with the tasks it kept."""
        template: str | bytes | None
        try:
            template = self._template_blob(workflow)
        except Exception:
            template = None
        self._batch.append(ExecutionRecord(workflow.uid, workflow.template.uid, UNFINISHED, None, template=template))
        for tid, entry in kept.items():
            self.task_record(workflow, tid, entry)
        self._later()

    def workflow_end(self, workflow: Workflow, state: str, error: str | None) -> None:
        """Record that `workflow` ended in `state` (`error` describes a failure)."""
        self._batch.append(ExecutionRecord(workflow.uid, workflow.template.uid, state, None, _now(), error))
        self._later()

    def task_record(self, workflow: Workflow, tid: str, entry: Entry) -> None:
        """Record the report entry of task `tid`; nobody waits for it.

        `entry` may be a function making the entry, called only if the record
        is still due when the batch is written (a task that ends first is
        recorded by `task_end` instead). The entry is serialized when written:
        data that cannot be stored then is logged and the task recorded as
        failed.
        """
        self._lazy[workflow.uid, tid] = (workflow, entry)
        self._later()

    def task_end(self, workflow: Workflow, tid: str, entry: dict[str, Any], then: Then) -> str | None:
        """Record the final report entry of task `tid`; call `then` once it is durable.

        `then` gets None, or a `JournalError` when the store could not write.

        Returns:
            None, or the error message when the entry's data cannot be stored
            (the task is recorded as failed with that message instead).
        """
        self._lazy.pop((workflow.uid, tid), None)
        record, error = self._task(workflow, tid, entry)
        self._batch.append(record)
        self._submit([then])
        return error

    def _task(self, workflow: Workflow, tid: str, entry: dict[str, Any]) -> tuple[TaskRecord, str | None]:
        data = {k: v for k, v in entry.items() if k not in _COLUMN_KEYS}
        attempts = data.get("attempts")
        if attempts:
            data["attempts"] = [{**a, "start": iso(a.get("start")), "end": iso(a.get("end"))} for a in attempts]
        state, error = entry["state"], entry.get("error")
        refused = None
        try:
            blob = self._dumps(data)
        except Exception:
            refused, blob = self._refuse_task(workflow, tid, data)
            state, error = "exception", refused
        start, end = iso(entry["start"]), iso(entry["end"])
        return TaskRecord(workflow.uid, tid, entry.get("id"), state, start, end, blob, error), refused

    def _refuse_task(self, workflow: Workflow, tid: str, data: dict[str, Any]) -> tuple[str, str | bytes]:
        """Name the field that cannot be stored; serialize the others."""
        problems = []
        for key, value in data.items():
            try:
                self._dumps(value)
            except Exception as exc:
                problems.append(f"its {key} ({type(value).__name__}) cannot be stored: {type(exc).__name__}: {exc}")
                data[key] = None
        error = f"task {tid} of workflow {workflow.template.uid}: " + "; ".join(problems or ["data cannot be stored"])
        log.error("[%s] %s", workflow.uid, error)
        try:
            blob = self._dumps(data)
        except Exception:
            blob = self._dumps({})
        return error, blob
