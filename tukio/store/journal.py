"""`Journal`: the recorder that writes what an engine's workflows do to a `Store`.

The journal serializes on the event loop (so a value that cannot be stored is
caught where it is produced, and later mutations cannot tear a record). A
record the workflow waits for (a task's end, a workflow's begin) is committed
at the end of the current turn of the loop, together with every other record
made in that turn (group commit); the `Written` returned for it resolves once
the commit returns. The commit happens on the loop when the store can do it
without blocking (`Store.write_nowait`), otherwise on a dedicated writer
thread; batches are committed in the order they were made either way.
Records nobody waits for ride along with the next batch, or are written after
`LAZY_DELAY` at the latest.

Faults stay where they belong:

- text a store cannot encode (lone surrogates) is escaped when recorded;
- data the serializer refuses fails that task (or workflow) alone;
- a record the store refuses while it accepts the others is replaced by a
  smaller one naming the workflow, the task and the field (logged);
- when the store accepts nothing (disk full, database locked) the batch is
  retried, with a growing delay, until it is written: the workflows waiting
  on it wait, and nothing is dropped.

With a store that `keeps_events`, an event a running task receives is
journaled (a `TaskEventRecord`) and the task gets it once that is committed,
in order; a task re-run by recovery gets its journaled events again first
(`replay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

from tukio._report import NO_REPORT, describe_error, holder_report, iso, iso_from_timestamp, iso_now, storable
from tukio.errors import DamagedRecordError, JournalError
from tukio.event import Event, EventSource
from tukio.recorder import WRITTEN, Recorder, Written
from tukio.store._catchup import Fetch, ListenMark, catch_up, mark_payload, read_mark
from tukio.store.base import LOST_EVENT, UNFINISHED, ExecutionRecord, Record, Store, TaskEventRecord, TaskRecord
from tukio.utils import FutureState

if TYPE_CHECKING:
    from tukio.task.task import TukioTask
    from tukio.workflow.workflow import Workflow

__all__ = ["LAZY_DELAY", "Journal"]

log = logging.getLogger(__name__)

#: Seconds a record that nobody waits for may stay in memory before it is written.
LAZY_DELAY = 0.05
#: Deferred commits in a row that gathered one writer each, before commits run at once (see `Journal._submit`).
LONE_TURNS = 3
#: Seconds the writer thread waits for work before it exits (it restarts on demand).
IDLE_EXIT = 1.0
#: First and longest wait (seconds) before writing again to a store that failed.
RETRY_DELAY = (0.05, 5.0)


# -- writing a batch, whatever it takes -----------------------------------------------------
def _smaller(record: Record, empty: str | bytes, exc: BaseException) -> Iterator[tuple[str, Record]]:
    """Ever smaller versions of a record the store refused, each with the field it drops."""
    if isinstance(record, TaskEventRecord):
        where = f"task {storable(record.task_id)} of workflow {storable(record.exec_id)}"
        error = f"{where}: event {record.seq} cannot be stored: {describe_error(exc)}"
        yield "event", record._replace(data=None, error=storable(error))
    elif isinstance(record, TaskRecord):
        where = f"task {storable(record.task_id)} of workflow {storable(record.exec_id)}"
        yield "data", record._replace(data=empty)
        error = f"{where}: its record cannot be stored: {describe_error(exc)}"
        yield "data and error", record._replace(data=empty, error=storable(error), state="exception")
    else:
        where = f"workflow {storable(record.exec_id)}"
        if record.event is not None and record.template is not None:
            yield "event", record._replace(event=None)  # the template may be its version's only copy
        yield "template and event", record._replace(template=None, event=None)
        error = f"{where}: its record cannot be stored: {describe_error(exc)}"
        yield "template, event and error", record._replace(template=None, event=None, error=storable(error))


def write_all(store: Store, batch: list[Record], empty: str | bytes) -> None:
    """Write `batch` to `store` in order; return only once everything is written.

    A record the store refuses alone, while it accepts smaller versions of
    it, is replaced by the first version it accepts (logged, naming the
    field). When the store accepts nothing, this waits (doubling the delay
    up to `RETRY_DELAY`) and tries again.
    """
    delay = RETRY_DELAY[0]
    pending = batch
    while pending:
        try:
            store.write(pending)
            return
        except Exception as exc:
            error: BaseException = exc
        left: list[Record] = []
        for i, record in enumerate(pending):
            if _write_alone(store, record, empty):
                continue
            left = pending[i:]
            break
        if not left:
            return
        pending = left
        log.warning(
            "journal: %r wrote nothing (%s); %d record(s) wait, trying again in %.2gs",
            store,
            describe_error(error),
            len(pending),
            delay,
        )
        time.sleep(delay)
        delay = min(delay * 2, RETRY_DELAY[1])


def _write_alone(store: Store, record: Record, empty: str | bytes) -> bool:
    """Write one record (or a smaller version of it); False when the store takes nothing."""
    steps = shrink(record, empty)
    attempt = next(steps)
    while True:
        try:
            store.write([attempt])
            error: BaseException | None = None
        except Exception as exc:
            error = exc
        try:
            attempt = steps.send(error)
        except StopIteration as stop:
            return bool(stop.value)


def shrink(record: Record, empty: str | bytes) -> Generator[Record, BaseException | None, bool]:
    """The writes that get one record into a store that refused it in a batch (sans I/O).

    Yields the record to write next, and is sent what that write raised (None
    when it was committed). First the record itself; refused, its ever smaller
    versions (`_smaller`), until one is taken: then the record once more (was
    it the record, or a passing fault?), else the smaller version stays, the
    field it dropped logged.

    Returns:
        True once the record (or a smaller version) is written; False when
        the store takes nothing.
    """
    error = yield record
    if error is None:
        return True
    for field, smaller in _smaller(record, empty, error):
        if (yield smaller) is not None:
            continue
        again = yield record
        if again is None:
            return True
        what = "its execution record" if isinstance(record, ExecutionRecord) else f"task {record.task_id}"
        log.error(
            "journal: workflow %s, %s: the %s could not be stored (%s) and was left out",
            record.exec_id,
            what,
            field,
            describe_error(again),
        )
        return True
    return False


class _Writer:
    """The thread that commits batches for a blocking store, in order."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop, empty: str | bytes) -> None:
        self._store = store
        self._loop = loop
        self._empty = empty
        self._queue: queue.SimpleQueue[tuple[list[Record], list[Written]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(
        self, batch: list[Record], written: Written, landed: Callable[[Any, BaseException | None], None]
    ) -> None:
        with self._lock:
            self._queue.put((batch, [written]))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, args=(landed,), name="tukio-journal", daemon=True)
                self._thread.start()

    def _run(self, landed: Callable[[Any, BaseException | None], None]) -> None:
        while True:
            try:
                batch, written = self._queue.get(timeout=IDLE_EXIT)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            # Group commit: whatever queued up while the last commit ran goes in this one.
            while True:
                try:
                    more, more_written = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.extend(more)
                written.extend(more_written)
            write_all(self._store, batch, self._empty)
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                self._loop.call_soon_threadsafe(_landed_all, written, landed)


def _landed_all(written: list[Written], landed: Callable[[Any, BaseException | None], None]) -> None:
    for item in written:
        landed(None, None)
        item.resolve()


class Journal(Recorder):
    """Records workflow and task transitions of one engine in a `Store`.

    Args:
        store: where records go.
        loop: the engine's loop (callbacks and timers run there).
    """

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self._loop = loop
        self._dumps: Callable[[Any], str | bytes] = store.serializer.dumps
        self._empty = self._dumps({})
        self._batch: list[Record] = []
        # Records nobody waits for yet: a workflow (its entry is made when written) or a ready entry.
        self._lazy: dict[tuple[str, str], tuple[Workflow, dict[str, Any] | None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._writer: _Writer | None = None
        self._written: Written | None = None  # resolves once the batch being made is committed
        self._committing = False  # in `_commit`: a new batch waits for the next turn
        self._stored_begins: set[str] = set()  # executions whose begin the flow control committed
        # How many deferred commits in a row gathered no other waiter (from `LONE_TURNS` on,
        # commits run at once), and how many waiters joined the deferred commit being made.
        self._lone = LONE_TURNS
        self._joined = 0
        self._this_turn = False  # a commit ran at once in this turn of the loop
        self._in_thread = 0  # batches handed to the writer thread, not committed yet
        # The template versions this journal wrote: a store keeps one copy of each.
        self._versions: set[str] = set()
        # Whether the store may take batches on the loop (else no need to ask, for every batch).
        self._soon = type(store).write_soon is not Store.write_soon
        self._keeps_events = bool(getattr(store, "keeps_events", False))
        # The number of the last event journaled for each task, by execution id and task id.
        self._seqs: dict[str, dict[str, int]] = {}
        # Journaled events the tasks of a resumed execution get again as they start (see `replay`).
        self._replay: dict[str, dict[str, list[Event]]] = {}
        # Of those tasks, the ones that listened to shared events: their mark, the ids they got.
        self._marks: dict[str, dict[str, tuple[ListenMark, list[int]]]] = {}
        # With events shared by several nodes: where they stand now, and how to read them (`share_events`).
        self._mark_now: Callable[[Callable[[ListenMark], object]], object] | None = None
        self._fetch: Fetch | None = None

    # -- batching --------------------------------------------------------------
    def _later(self) -> None:
        # One timer at a time, never cancelled: a commit in between leaves it
        # with nothing to do, which costs less than a timer per record.
        if self._timer is None:
            self._timer = self._loop.call_later(LAZY_DELAY, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if (self._batch or self._lazy) and self._written is None:
            self._submit()

    def _submit(self) -> Written:
        """Commit everything recorded so far at the end of this turn; return what resolves then.

        A commit deferred to the end of the turn groups whatever else is
        recorded in it. When the last `LONE_TURNS` deferred commits gathered
        nobody else (one workflow at a time, a chain), nothing is gained by
        waiting: the first commit of a turn then runs at once, which saves that turn (one
        poll of the selector); when the store takes it on the loop, nobody
        has to wait and `WRITTEN` is returned (no `Written` is made: a
        chain's every task end comes here). A second writer in the same turn
        is deferred (and those after it join it): commits are grouped again.
        This needs nothing private of the loop (it works on uvloop as on
        asyncio). Not from inside a commit (what it resolves may end tasks
        at once, with eager start): those wait for the next turn, so the
        nesting stays bounded.
        """
        written = self._written
        if written is not None:
            self._joined += 1
            return written
        if self._lone >= LONE_TURNS and not self._committing:
            if not self._this_turn:
                self._this_turn = True
                self._loop.call_soon(self._turned)
                self._committing = True
                try:
                    return self._commit_batch(None)
                finally:
                    self._committing = False
            self._lone = 0  # another writer in the turn of a commit made at once: group again
        written = self._written = Written()
        self._joined = 0
        self._loop.call_soon(self._commit)
        return written

    def _turned(self) -> None:
        self._this_turn = False

    def _commit(self) -> None:
        written, self._written = self._written, None
        if written is None:  # committed at once by `_submit` already
            return
        self._lone = self._lone + 1 if self._joined == 0 else 0
        self._committing = True
        try:
            self._commit_batch(written)
        finally:
            self._committing = False

    def _commit_batch(self, written: Written | None) -> Written:
        """Commit the batch made so far, in order after the earlier ones.

        Args:
            written: what the records' writers wait on (None: nobody yet).

        Returns:
            What resolves once the batch is committed: `written` (made when
            None and the commit has to wait), or `WRITTEN` when it is done.
        """
        for (_, tid), (workflow, entry) in self._lazy.items():
            self._add_task(workflow, tid, entry, running=True)
        self._lazy.clear()
        batch, self._batch = self._batch, []
        if self._in_thread == 0:  # else this batch must wait for the earlier ones (even when empty)
            if self._soon:
                pending = written if written is not None else Written()
                if self.store.write_soon(batch, functools.partial(_landed_soon, pending)):
                    return pending  # a network store commits on the loop, in order (see Store.write_soon)
            try:
                if not batch or self.store.write_nowait(batch):
                    return _resolved(written)
            except Exception:
                log.exception(
                    "journal: writing %d record(s) to %r failed; retrying from a thread", len(batch), self.store
                )
        if written is None:
            written = Written()
        if self._writer is None:
            self._writer = _Writer(self.store, self._loop, self._empty)
        self._in_thread += 1
        self._writer.submit(batch, written, self._landed)
        return written

    def _landed(self, _: Any, error: BaseException | None) -> None:
        self._in_thread -= 1

    def flush(self) -> Written:
        """Return what resolves once everything recorded so far is committed."""
        return self._submit()

    # -- records ---------------------------------------------------------------
    def _template_blob(self, workflow: Workflow) -> tuple[str, str | bytes | None]:
        """The version of the workflow's template, and the serialized template the first time only.

        A store keeps one copy of each version (see `ExecutionRecord`): the
        template is serialized and written with the first record of its
        version, and the later records name the version alone. A write that
        fails is retried until it lands, so that copy is not lost.
        """
        template = workflow.template
        version = template.version
        if version in self._versions:
            return version, None
        blob = _storable_blob(self._dumps(template.as_dict()))
        self._versions.add(version)
        return version, blob

    def begun_in_store(self, exec_id: str) -> None:
        """The begin record of `exec_id` (its data, owned by this node) is committed: do not write it again."""
        self._stored_begins.add(exec_id)

    def workflow_begin(self, workflow: Workflow, data: Any) -> Written:
        """Record that `workflow` starts with the triggering `data`.

        Returns:
            What resolves once that is durable; with a `JournalError` when the
            data (or the template) cannot be stored: the execution is then
            recorded as failed.
        """
        if self._stored_begins and workflow.uid in self._stored_begins:
            self._stored_begins.discard(workflow.uid)  # queued in the store with its data (tukio.flow.shared)
            return WRITTEN
        uid, template_id = storable(workflow.uid), storable(str(workflow.template.uid))
        what = "its template"
        version: str | None = None
        template: str | bytes | None = None
        try:
            version, template = self._template_blob(workflow)
            what = f"its triggering data ({type(data).__name__})"
            event = _storable_blob(self._dumps(data))
        except Exception as exc:
            error = storable(f"workflow {template_id}: {what} cannot be stored: {describe_error(exc)}")
            log.error("[%s] %s", uid, error)
            self._batch.append(
                ExecutionRecord(uid, template_id, "exception", iso_now(), iso_now(), error, template, version=version)
                if version is not None
                else ExecutionRecord(uid, template_id, "exception", iso_now(), iso_now(), error)
            )
            self._later()
            return Written(JournalError(error), done=True)
        self._batch.append(
            ExecutionRecord(uid, template_id, UNFINISHED, iso_now(), template=template, event=event, version=version)
        )
        return self._submit()

    def workflow_rescued(self, workflow: Workflow, kept: dict[str, dict[str, Any]]) -> None:
        """Record that `workflow` was rebuilt from a report, with the tasks it kept."""
        template: str | bytes | None
        version: str | None
        try:
            version, template = self._template_blob(workflow)
        except Exception:
            version = template = None
        uid = storable(workflow.uid)
        self._batch.append(
            ExecutionRecord(
                uid, storable(str(workflow.template.uid)), UNFINISHED, None, template=template, version=version
            )
        )
        for tid, entry in kept.items():  # ended already: written as they are
            self._add_task(workflow, tid, entry)
        self._later()

    def workflow_end(self, workflow: Workflow, state: str, error: str | None) -> None:
        """Record that `workflow` ended in `state` (`error` describes a failure)."""
        if self._seqs:
            self._seqs.pop(workflow.uid, None)
        self._batch.append(
            ExecutionRecord(
                storable(workflow.uid),
                storable(str(workflow.template.uid)),
                state,
                None,
                iso_now(),
                storable(error) if error is not None else None,
            )
        )
        self._later()

    def task_started(self, workflow: Workflow, task_id: str) -> None:
        """Record that task `task_id` started; written with the next batch, nobody waits.

        A task of a resumed execution gets the events it had received first (see `replay`).
        """
        self._lazy[workflow.uid, task_id] = (workflow, None)
        self._later()
        if self._replay:
            waiting = self._replay.get(workflow.uid)
            events = waiting.pop(task_id, None) if waiting else None
            task = workflow.tasks_by_id.get(task_id) if events is not None else None
            if events is not None and task is not None:
                if events:
                    log.info(
                        "[%s] task %s gets the %d event(s) it had received again", workflow.uid, task_id, len(events)
                    )
                for event in events:
                    task.queue.put_nowait(event)
                marked = self._marks.get(workflow.uid, {}).pop(task_id, None)
                if marked is not None and self._fetch is not None and task._listening:
                    catch_up(task, marked[0], marked[1], self._fetch)
                    return
        if self._mark_now is not None:
            self._mark_listening(workflow, task_id)

    def share_events(self, mark_now: Callable[[Callable[[ListenMark], object]], object], fetch: Fetch) -> None:
        """Events are shared by several nodes: keep where they stand when a task starts listening.

        A task resumed on another node then gets the events it missed (see
        `tukio.store._catchup`).

        Args:
            mark_now: calls its argument with where the shared events stand on
                this engine's loop (now, or as soon as that is known).
            fetch: reads the events every node published after an id.
        """
        self._mark_now, self._fetch = mark_now, fetch

    def _mark_listening(self, workflow: Workflow, task_id: str) -> None:
        """Journal where the shared events stand, if task `task_id` listens to topics."""
        task = workflow.tasks_by_id.get(task_id)
        if task is not None and task._listening and self._mark_now is not None:
            self._mark_now(functools.partial(self._marked, workflow, task, task_id))

    def _marked(self, workflow: Workflow, task: TukioTask, task_id: str, mark: ListenMark) -> None:
        if task.done() or workflow.tasks_by_id.get(task_id) is not task:
            return  # ended (or retried) before the mark was known
        seqs = self._seqs.get(workflow.uid)
        if seqs is None:
            seqs = self._seqs[workflow.uid] = {}
        seq = seqs[task_id] = seqs.get(task_id, 0) + 1
        blob = _storable_blob(self._dumps(mark_payload(mark)))
        self._batch.append(TaskEventRecord(storable(workflow.uid), storable(task_id), seq, blob))
        self._later()  # (written with the next batch, or soon: the mark may come after the task's start)

    def task_event(self, workflow: Workflow, task_id: str, event: Event) -> Written:
        """Journal an event task `task_id` receives; the task gets it once that is committed.

        Returns:
            What resolves once the event is durable (already resolved when
            the store keeps no events); with a `JournalError` when the
            serializer refuses the event (the task then fails).
        """
        if not self._keeps_events:
            return WRITTEN
        source = event.source
        try:
            where = None if source is None else list(source.as_dict().values())
            kept = (
                [event.data, event.topic, where] if event._id is None else [event.data, event.topic, where, event._id]
            )
            blob = _storable_blob(self._dumps(kept))
        except Exception as exc:
            error = storable(
                f"task {task_id} of workflow {workflow.template.uid}: an event it received "
                f"({type(event.data).__name__} on topic {event.topic!r}) cannot be stored: {describe_error(exc)}"
            )
            log.error("[%s] %s", workflow.uid, error)
            return Written(JournalError(error), done=True)
        seqs = self._seqs.get(workflow.uid)
        if seqs is None:
            seqs = self._seqs[workflow.uid] = {}
        seq = seqs[task_id] = seqs.get(task_id, 0) + 1
        self._batch.append(TaskEventRecord(storable(workflow.uid), storable(task_id), seq, blob))
        return self._submit()

    def replay(self, exec_id: str, events: dict[str, list[tuple[int, Any]]]) -> None:
        """Keep the journaled events of a resumed execution's tasks for when they start again.

        Args:
            exec_id: the execution about to be resumed.
            events: what `Store.task_events` returned for it.

        Raises:
            DamagedRecordError: an event is not one the journal wrote.
        """
        seqs: dict[str, int] = {}
        waiting: dict[str, list[Event]] = {}
        marks: dict[str, tuple[ListenMark, list[int]]] = {}
        got: dict[str, list[int]] = {}  # the ids of the shared events each task received
        for task_id, items in events.items():
            if not items:
                continue
            seqs[task_id] = items[-1][0]
            kept = waiting[task_id] = []
            for seq, payload in items:
                if payload is LOST_EVENT:
                    log.error("[%s] task %s: event %d was not stored; its re-run goes without", exec_id, task_id, seq)
                    continue
                try:
                    mark = read_mark(payload)
                    if mark is not None:  # where the shared events stood when it started listening
                        marks[task_id] = (mark, got.setdefault(task_id, []))
                        continue
                    data, topic, where, *stored = payload
                    source = None if where is None else EventSource(*where)
                    event = Event(data, topic=topic, source=source)
                    if stored:
                        event._id = int(stored[0])
                        got.setdefault(task_id, []).append(event._id)
                    kept.append(event)
                except Exception as exc:
                    raise DamagedRecordError(
                        exec_id, f"task {task_id}: event {seq} cannot be rebuilt: {describe_error(exc)}"
                    ) from exc
        if seqs:
            self._seqs[exec_id] = seqs
            self._replay[exec_id] = waiting
        if marks:
            self._marks[exec_id] = marks

    def replayed(self, exec_id: str) -> None:
        """Forget the events `replay` kept for tasks of `exec_id` that did not start again."""
        self._replay.pop(exec_id, None)
        self._marks.pop(exec_id, None)

    def task_retrying(self, workflow: Workflow, task_id: str) -> None:
        """Record task `task_id` as pending: a crash before its next attempt runs it again."""
        seqs = self._seqs.get(workflow.uid) if self._seqs else None
        if seqs is not None and task_id in seqs:
            # A new attempt gets no event of the earlier one, after a crash either.
            seq = seqs[task_id] = seqs[task_id] + 1
            self._batch.append(TaskEventRecord(storable(workflow.uid), storable(task_id), seq, None))
        entry = workflow.task_entry(task_id)
        if entry is not None:
            entry["state"] = "pending"
            entry.pop("error", None)
            self._lazy[workflow.uid, task_id] = (workflow, entry)
        self._later()

    def task_ended(self, workflow: Workflow, task_id: str) -> Written:
        """Record the final entry of task `task_id`.

        Returns:
            What resolves once it is durable: with a `JournalError` when its
            data cannot be stored (the task is recorded as failed instead).
        """
        self._lazy.pop((workflow.uid, task_id), None)
        refused = self._add_task(workflow, task_id, None)
        written = self._submit()
        if refused is None:
            return written
        failed = Written()
        written.then(_fail, (failed, refused))
        return failed

    def _add_task(
        self, workflow: Workflow, tid: str, entry: dict[str, Any] | None, *, running: bool = False
    ) -> str | None:
        """Add the record of task `tid` to the batch; return why its data was refused, if it was.

        A `running` record (one whose end the workflow has not recorded yet)
        is always written as pending, even when the task's future is already
        done: its end, outputs and error belong to `task_ended` alone, else a
        crash in between would leave a task "finished" with no outputs, and
        recovery would hand None to its successors.
        """
        try:
            if entry is None:
                task = workflow.tasks_by_id.get(tid)
                if task is not None and workflow.entry_is_the_tasks(tid) and (running or task.ended()):
                    record, refused = self._task_record(workflow, tid, task, running)
                    self._batch.append(record)
                    return refused
                entry = workflow.task_entry(tid)
                if entry is None:
                    return None
            if running and entry.get("state") != "pending":
                entry = {**entry, "state": "pending", "end": None, "outputs": None}
                entry.pop("error", None)
            record, refused = self._task(workflow, tid, entry)
        except Exception as exc:
            # Contained: this task's record is replaced by one saying why.
            refused = storable(
                f"task {tid} of workflow {workflow.template.uid}: cannot be recorded: {describe_error(exc)}"
            )
            log.exception("[%s] %s", workflow.uid, refused)
            record = TaskRecord(
                storable(workflow.uid), storable(tid), None, "exception", None, iso_now(), self._empty, refused
            )
        self._batch.append(record)
        return refused

    def _task_record(
        self, workflow: Workflow, tid: str, task: TukioTask, running: bool
    ) -> tuple[TaskRecord, str | None]:
        """The record of `task` made from its fields: what `_task` makes of its `task_entry`, built once.

        Times go from the task's floats to text, with no datetime in
        between; only what is not a column goes through the serializer.
        """
        start, end = task.times()
        outputs = task.outputs
        error = task.error
        if running:
            # As `_add_task` makes of the entry: pending, with no end, outputs or error.
            end = error = None
            if task.ended() or (not task.done() and task.future_state is not FutureState.pending):
                outputs = None
            state = UNFINISHED
        else:
            state = task.future_state._value_
        data = {"inputs": task.inputs, "outputs": outputs}
        if task.holder is not None:
            reporting = holder_report(task, f"[{workflow.uid}] task {tid}")
            if reporting is not NO_REPORT:
                data["reporting"] = reporting
        text = None if error is None else storable(describe_error(error))
        blob, refused = self._task_blob(workflow, tid, data)
        if refused is not None:
            state, text = "exception", refused
        return TaskRecord(
            storable(workflow.uid),
            storable(tid),
            storable(task.uid),
            state,
            iso_from_timestamp(start),
            iso_from_timestamp(end),
            blob,
            text,
        ), refused

    def _task_blob(self, workflow: Workflow, tid: str, data: dict[str, Any]) -> tuple[str | bytes, str | None]:
        """Encode what of task `tid` is not a column; a refused value is replaced (the reason returned)."""
        try:
            blob = self._dumps(data)
        except Exception:
            refused, blob = self._refuse_task(workflow, tid, data)
            return blob, refused
        return (storable(blob) if blob.__class__ is str else blob), None

    def _task(self, workflow: Workflow, tid: str, entry: dict[str, Any]) -> tuple[TaskRecord, str | None]:
        data = entry.copy()  # what is not a column goes in the blob
        task_exec_id = data.pop("id", None)
        start = data.pop("start", None)
        end = data.pop("end", None)
        state = data.pop("state")
        error = data.pop("error", None)
        attempts = data.get("attempts")
        if attempts:
            data["attempts"] = [{**a, "start": _iso(a.get("start")), "end": _iso(a.get("end"))} for a in attempts]
        blob, refused = self._task_blob(workflow, tid, data)
        if refused is not None:
            state, error = "exception", refused
        return TaskRecord(
            storable(workflow.uid),
            storable(tid),
            storable(task_exec_id) if isinstance(task_exec_id, str) else None,
            state,
            None if start is None else iso(start),
            None if end is None else iso(end),
            blob,
            storable(error) if isinstance(error, str) else None,
        ), refused

    def _refuse_task(self, workflow: Workflow, tid: str, data: dict[str, Any]) -> tuple[str, str | bytes]:
        """Name the field that cannot be stored; serialize the others."""
        problems = []
        for key, value in data.items():
            try:
                self._dumps(value)
            except Exception as exc:
                problems.append(f"its {key} ({type(value).__name__}) cannot be stored: {describe_error(exc)}")
                data[key] = None
        error = storable(
            f"task {tid} of workflow {workflow.template.uid}: " + "; ".join(problems or ["data cannot be stored"])
        )
        log.error("[%s] %s", workflow.uid, error)
        try:
            blob = _storable_blob(self._dumps(data))
        except Exception:
            blob = self._empty
        return error, blob


def _resolved(written: Written | None) -> Written:
    """`written` resolved now (`WRITTEN` when nobody made one)."""
    if written is None:
        return WRITTEN
    written.resolve()
    return written


def _landed_soon(written: Written, error: BaseException | None) -> None:
    """A batch given to `Store.write_soon` is committed (or failed: its tasks fail)."""
    written.resolve(None if error is None else JournalError(f"journal write failed: {error!r}"))


def _fail(pair: tuple[Written, str], error: BaseException | None) -> None:
    failed, refused = pair
    failed.resolve(JournalError(refused))


def _iso(value: Any) -> str | None:
    return iso(value) if value is not None else None


def _storable_blob(blob: str | bytes) -> str | bytes:
    return storable(blob) if isinstance(blob, str) else blob
