"""`SQLiteStore`: the journal in an SQLite database (standard-library `sqlite3`, WAL mode)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import os
import sqlite3
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import datetime
from typing import IO, Any

if sys.platform != "win32":
    import fcntl

from tukio._report import iso_now
from tukio.policy import Decision, OverrunPolicy
from tukio.store import _ownsql as own
from tukio.store._flow_sqlite import SQLiteFlow
from tukio.store._flowsql import QUEUED, drive
from tukio.store._gate import rule
from tukio.store._lease import Beat, Clock, lease_clock
from tukio.store._node import OwningNode
from tukio.store._ownsql import COLUMNS, SQLITE_OWNING, Step
from tukio.store._sqladmin import SQLITE, Runner, SQLAdmin
from tukio.store.base import (
    UNFINISHED,
    ExecutionInfo,
    ExecutionRecord,
    Record,
    Serializer,
    Store,
    TaskEventRecord,
    TaskRecord,
    build_report,
    execution_info,
    iso,
    parse_states,
    task_events,
)

__all__ = ["CHECKPOINT_EVERY", "EVENT_POLL", "SCHEMA_VERSION", "WAL_SIZE_LIMIT", "SQLiteStore"]

log = logging.getLogger(__name__)

#: Records written between two checkpoints of the write-ahead log.
CHECKPOINT_EVERY = 1000
#: Bytes the write-ahead log file is cut back to once it restarts (SQLite's
#: ``journal_size_limit``); between two checkpoints it grows by the pages of
#: `CHECKPOINT_EVERY` records at most (a few MB).
WAL_SIZE_LIMIT = 4 * 1024 * 1024
#: Seconds a checkpoint waits for another process's reads before it gives up
#: (it is tried again after the next `CHECKPOINT_EVERY` records).
CHECKPOINT_WAIT = 0.2
#: Checkpoints a background checkpoint runs beside the loop's commits before
#: the last one, which holds the store's lock (see `SQLiteStore._checkpoint_beside`).
CHECKPOINT_ROUNDS = 2
_BUSY = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
#: Seconds between two reads of the events other processes published, while a task listens.
EVENT_POLL = 0.05

#: Migration n (1-based) brings a file from schema version n-1 to n (SQLite's ``user_version``).
#: A file made before versions were kept has the tables of 1 and version 0: 1 then changes nothing.
_MIGRATIONS: tuple[str, ...] = (
    # 1: executions and tasks.
    """
    CREATE TABLE IF NOT EXISTS executions (
        exec_id TEXT PRIMARY KEY,
        template_id TEXT,
        state TEXT NOT NULL,
        started TEXT,
        ended TEXT,
        error TEXT,
        template BLOB,
        event BLOB
    );
    CREATE INDEX IF NOT EXISTS executions_by_state ON executions (state, template_id);
    CREATE TABLE IF NOT EXISTS tasks (
        exec_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        task_exec_id TEXT,
        state TEXT NOT NULL,
        started TEXT,
        ended TEXT,
        data BLOB,
        error TEXT,
        PRIMARY KEY (exec_id, task_id)
    ) WITHOUT ROWID;
    """,
    # 2: ownership: the owner (node and epoch) of each execution, and the nodes with their leases.
    """
    ALTER TABLE executions ADD COLUMN owner TEXT;
    ALTER TABLE executions ADD COLUMN epoch INTEGER;
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        epoch INTEGER NOT NULL,
        lease REAL NOT NULL,
        beat REAL NOT NULL,
        expires REAL NOT NULL
    );
    """,
    # 3: overrun policies across nodes (whether each execution still holds its lock, requests to
    # cancel an execution wherever it runs), and which nodes carry a name of their own.
    """
    ALTER TABLE executions ADD COLUMN locked INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE cancels (
        exec_id TEXT PRIMARY KEY,
        by_node TEXT,
        at REAL NOT NULL
    );
    ALTER TABLE nodes ADD COLUMN ephemeral INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: the events running tasks received (replayed when a task runs again), and the events
    # published for the other processes (AUTOINCREMENT: ids never go back, even once pruned).
    """
    CREATE TABLE task_events (
        exec_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        data BLOB,
        error TEXT,
        PRIMARY KEY (exec_id, task_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        origin TEXT,
        topic TEXT,
        data BLOB NOT NULL,
        at REAL NOT NULL
    );
    """,
    # 5: template versions: one copy of each template version, named by each execution.
    """
    CREATE TABLE versions (
        version TEXT PRIMARY KEY,
        template_id TEXT,
        template BLOB NOT NULL,
        created TEXT
    );
    ALTER TABLE executions ADD COLUMN version TEXT;
    """,
    # 6: listings of `tukio.manage`, newest first, by start time and id (keyset pages), all of them
    # or those of a state or a template; and the failed tasks, to find the executions that have some.
    """
    CREATE INDEX executions_by_start ON executions (coalesce(started, ''), exec_id);
    CREATE INDEX executions_by_state_start ON executions (state, coalesce(started, ''), exec_id);
    CREATE INDEX executions_by_template_start ON executions (template_id, coalesce(started, ''), exec_id);
    CREATE INDEX tasks_failed ON tasks (state, exec_id) WHERE state IN ('exception', 'timeout');
    """,
    # 7: flow control: the durable queue (state 'queued'; see tukio.store._flowsql): each queued
    # execution's priority, partition, due time and arrival; when each started (rates); whether its
    # owner has yet to launch it.
    """
    ALTER TABLE executions ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN part TEXT;
    ALTER TABLE executions ADD COLUMN due REAL;
    ALTER TABLE executions ADD COLUMN queued_at REAL;
    ALTER TABLE executions ADD COLUMN admitted REAL;
    ALTER TABLE executions ADD COLUMN launch INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX executions_queue ON executions (template_id, priority DESC, queued_at, exec_id)
        WHERE state = 'queued';
    CREATE INDEX executions_admitted ON executions (template_id, admitted) WHERE admitted IS NOT NULL;
    CREATE INDEX executions_launch ON executions (owner, epoch, template_id) WHERE launch = 1;
    """,
    # 8: schedules paused for every engine of the store.
    """
    CREATE TABLE schedule_pauses (template_id TEXT PRIMARY KEY, at REAL NOT NULL);
    """,
)
#: The schema version this tukio writes.
SCHEMA_VERSION = len(_MIGRATIONS)

# How a later record of an execution updates its row (a column left NULL keeps what was there).
_UPDATE_EXECUTION = """
ON CONFLICT (exec_id) DO UPDATE SET
    template_id = coalesce(excluded.template_id, template_id),
    state = excluded.state,
    started = coalesce(excluded.started, started),
    ended = excluded.ended,
    error = excluded.error,
    template = coalesce(excluded.template, template),
    event = coalesce(excluded.event, event),
    version = coalesce(excluded.version, version)
"""

_UPSERT_EXECUTION = (
    """
INSERT INTO executions (exec_id, template_id, state, started, ended, error, template, event, version)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
    + _UPDATE_EXECUTION
)

_UPSERT_TASK = """
INSERT OR REPLACE INTO tasks (exec_id, task_id, task_exec_id, state, started, ended, data, error)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""

# The same writes for a node (see `SQLiteStore.attach`), fenced in the statement itself: a new
# execution only while the node's epoch is current, an existing one only by its owner and epoch
# (a join moves the node's executions to its new epoch), a task only of such an execution.
_OWNED_EXECUTION = (
    """
INSERT INTO executions (exec_id, template_id, state, started, ended, error, template, event, version, owner, epoch)
SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
 WHERE EXISTS (SELECT 1 FROM nodes WHERE name = ? AND epoch = ?)
"""
    + _UPDATE_EXECUTION
    + """ WHERE executions.owner = excluded.owner AND executions.epoch = excluded.epoch
"""
)

_OWNED_TASK = """
INSERT OR REPLACE INTO tasks (exec_id, task_id, task_exec_id, state, started, ended, data, error)
SELECT ?, ?, ?, ?, ?, ?, ?, ?
 WHERE EXISTS (SELECT 1 FROM executions WHERE exec_id = ? AND owner = ? AND epoch = ?)
"""


def _apply(db: sqlite3.Connection, records: Sequence[Record], owner: tuple[str, int] | None = None) -> list[str]:
    """Write `records` through `db` in one transaction (a lone statement is one already).

    With an `owner` (node and epoch), the records of executions it does not
    own are not written.

    Returns:
        The ids of the executions whose records were refused, in order.
    """
    if owner is None:
        if len(records) == 1:
            _upsert(db, records[0])
            return []
        with _transaction(db):
            for r in records:
                _upsert(db, r)
        return []
    if len(records) == 1:
        return [] if _upsert_owned(db, records[0], owner, set()) else [records[0].exec_id]
    fenced: list[str] = []
    owned: set[str] = set()  # executions found owned in this transaction: their tasks need no check
    with _transaction(db):
        for r in records:
            if not _upsert_owned(db, r, owner, owned) and r.exec_id not in fenced:
                fenced.append(r.exec_id)
    return fenced


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _upsert(db: sqlite3.Connection, r: Record) -> None:
    if isinstance(r, TaskRecord):
        db.execute(_UPSERT_TASK, (r.exec_id, r.task_id, r.task_exec_id, r.state, r.start, r.end, r.data, r.error))
    elif isinstance(r, ExecutionRecord):
        db.execute(_UPSERT_EXECUTION, _keep_version(db, r))
    else:
        _task_event(db, r)


def _keep_version(db: sqlite3.Connection, r: ExecutionRecord) -> ExecutionRecord:
    """Keep the template of `r`'s version once (in ``versions``); return `r` without it."""
    if r.version is None or r.template is None:
        return r
    db.execute(
        "INSERT OR IGNORE INTO versions (version, template_id, template, created) VALUES (?, ?, ?, ?)",
        (r.version, r.template_id, r.template, r.start),
    )
    return r._replace(template=None)


#: The prefix of a task id being renamed by `SQLiteStore.repin` (within its transaction).
_MOVING = "\x01moving:"


def _task_event(db: sqlite3.Connection, r: TaskEventRecord) -> None:
    if r.data is None and r.error is None:  # a new attempt: forget the events of the earlier ones
        db.execute(
            "DELETE FROM task_events WHERE exec_id = ? AND task_id = ? AND seq < ?", (r.exec_id, r.task_id, r[2])
        )
    else:
        db.execute("INSERT OR REPLACE INTO task_events VALUES (?, ?, ?, ?, ?)", r)


def _upsert_owned(db: sqlite3.Connection, r: Record, owner: tuple[str, int], owned: set[str]) -> bool:
    """Write `r` if `owner` owns its execution (see `_OWNED_EXECUTION`); False when refused."""
    if isinstance(r, TaskEventRecord):
        if r.exec_id not in owned:
            found = db.execute(
                "SELECT 1 FROM executions WHERE exec_id = ? AND owner = ? AND epoch = ?", (r.exec_id, *owner)
            ).fetchall()
            if not found:
                return False
        _task_event(db, r)
    elif isinstance(r, TaskRecord):
        row = (r.exec_id, r.task_id, r.task_exec_id, r.state, r.start, r.end, r.data, r.error)
        if r.exec_id in owned:
            db.execute(_UPSERT_TASK, row)
            return True
        if db.execute(_OWNED_TASK, (*row, r.exec_id, *owner)).rowcount == 0:
            return False
    elif db.execute(_OWNED_EXECUTION, (*_keep_version(db, r), *owner, *owner)).rowcount == 0:
        return False
    owned.add(r.exec_id)
    return True


def _migrate(db: sqlite3.Connection, path: str) -> None:
    """Bring the file's schema to `SCHEMA_VERSION`, in one transaction (one process at a time)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{path!r} has schema version {version}, newer than this tukio knows ({SCHEMA_VERSION}): upgrade tukio"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[number - 1].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
            if version:
                log.info("SQLiteStore %r: schema migrated to version %d", path, number)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _text(raw: bytes) -> str | bytes:
    """Decode a TEXT column; a damaged one that is not UTF-8 stays bytes (reported by the reader)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def _busy(exc: sqlite3.OperationalError) -> bool:
    """True when `exc` says the database is locked by someone else."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code in _BUSY if code is not None else "locked" in str(exc) or "busy" in str(exc)


class SQLiteStore(SQLiteFlow, Store, OwningNode):
    """Keeps executions in an SQLite database file, in WAL mode.

    A commit is durable against a crash of the process as soon as it returns.
    With ``synchronous="NORMAL"`` (the default) the last commits may be lost
    if the whole machine loses power; ``"FULL"`` syncs every commit to the
    disk, at the cost of one fsync per commit.

    With "NORMAL" a commit only appends to the write-ahead log (no fsync), so
    the journal commits on the event loop (`write_nowait`): about 15 us per
    batch, against a round trip of about 100 us to a thread. When the
    database is locked (another process writing, a long read in another
    thread) the journal falls back to its writer thread. With "FULL", or
    ``write_on_loop=False`` (a slow or network file system, say), every write
    goes through that thread.

    The write-ahead log stays bounded: every `CHECKPOINT_EVERY` records it is
    copied into the database, so that it starts again from its beginning, cut
    back to `WAL_SIZE_LIMIT` bytes. After commits on the loop, a thread of the
    store does that beside them (the bulk of the copy, and its fsyncs), then
    stops them only for the last few frames. Only another process keeping a
    read open for long can hold it back.

    Several processes may share one file (see `tukio.cluster`): the
    engine attaches its store as a node (`attach`), every execution then
    carries its owner and epoch, and a write for an execution another node
    owns is refused in the statement that makes it (`on_fenced` hears of
    it). Each node locks its own lock file (``<path>.nodes/<node>.lock``,
    `flock`) while its store is open: a process that died is known dead at
    once, a paused one (it still holds the lock) once its lease expired.

    `prune()` gives the space of what it deletes back to the file system (a
    file made without SQLite's incremental vacuum, by an earlier development
    version or another tool, needs one `vacuum()` first).

    Args:
        path: the database file (created when missing).
        serializer: encodes data (`JSONSerializer` when None).
        synchronous: SQLite's ``synchronous`` setting, "NORMAL" or "FULL".
        write_on_loop: let the journal commit on the event loop when that
            cannot wait (only with "NORMAL").
        event_poll: seconds between two reads of the events other processes
            sharing the file published (see `publish`), while a task of
            this process listens; the latency of such an event.
        clock: the clock leases are read on (`lease_clock`: the host's boot
            time, the same in every process and unmoved by the wall clock;
            every process sharing the file must read the same one).

    Raises:
        ValueError: unknown `synchronous` value, or `event_poll` not positive.
        sqlite3.Error: the database cannot be opened.
    """

    blocking = True
    keeps_events = True
    _owning = SQLITE_OWNING

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        serializer: Serializer | None = None,
        synchronous: str = "NORMAL",
        write_on_loop: bool = True,
        event_poll: float = EVENT_POLL,
        clock: Clock = lease_clock,
    ) -> None:
        Store.__init__(self, serializer)
        OwningNode.__init__(self, clock)
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        if not event_poll > 0:
            raise ValueError(f"event_poll must be a positive number of seconds, got {event_poll!r}")
        self.event_poll: float | None = event_poll
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._written = 0  # records written since the last checkpoint
        # One connection shared by the journal thread and the application,
        # serialised by the lock.
        self._db: sqlite3.Connection | None = None
        # The event loop's own connection: never waits for a lock, never
        # checkpoints (that may fsync), so a commit is one append to the WAL.
        self._fast: sqlite3.Connection | None = None
        self._fast_cursor: sqlite3.Cursor  # its cursor, for a lone task record (see `write_nowait`)
        # Checkpoints, always under the lock: a commit never runs meanwhile.
        self._ckpt: sqlite3.Connection | None = None
        # The checkpoint that runs beside the loop's commits (one at a time), and its own
        # connection (used by that thread alone, without the lock).
        self._background: threading.Thread | None = None
        self._bulk: sqlite3.Connection | None = None
        self._synchronous = synchronous.upper()
        self._closing = False
        self._owner: tuple[str, int] | None = None  # (node, epoch) once joined: writes are fenced
        self._held: IO[bytes] | None = None  # the node's lock file, locked while the node lives
        try:
            self._db = self._connect(synchronous.upper(), timeout=10.0)
            self._db.text_factory = _text
            # Only takes effect in a new file, before its first table.
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("PRAGMA journal_mode=WAL")
            _migrate(self._db, self.path)
            self._ckpt = self._connect(synchronous.upper(), timeout=CHECKPOINT_WAIT)
            if write_on_loop and synchronous.upper() == "NORMAL":
                self._fast = self._connect("NORMAL", timeout=0)
                self._fast_cursor = self._fast.cursor()
        except BaseException:
            self._close_connections()
            raise

    def _connect(self, synchronous: str, timeout: float) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=timeout)
        try:
            own.sqlite_functions(db, lambda: self.clock(), lambda node: self._locked(node))
            db.execute(f"PRAGMA synchronous={synchronous}")
            # The store checkpoints itself (`_maybe_checkpoint`), never in the middle of a commit.
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute(f"PRAGMA journal_size_limit={int(WAL_SIZE_LIMIT)}").fetchall()
        except BaseException:
            db.close()
            raise
        return db

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.ProgrammingError(f"store {self.path!r} is closed")
        return self._db

    def write(self, records: Sequence[Record]) -> None:
        """Apply `records` in one transaction (see `Store.write`).

        Every `CHECKPOINT_EVERY` records, the calling thread then checkpoints
        the write-ahead log.
        """
        if self.node is not None and self._owner is None:
            self._ensure_joined()
        with self._lock:
            fenced = _apply(self._conn(), records, self._owner)
            self._written += len(records)
            if self._written >= CHECKPOINT_EVERY and self._background is None:
                self._checkpoint_locked("RESTART")
        if self._owner is not None:
            self._refused(records, fenced)

    def write_nowait(self, records: Sequence[Record]) -> bool:
        """Apply `records` now, unless the database or the store is busy (see `Store.write_nowait`).

        Only with ``synchronous="NORMAL"``, where a commit does not fsync.
        Once `CHECKPOINT_EVERY` records were written, it starts a checkpoint
        in a thread of the store (`_checkpoint_beside`): the loop goes on
        committing while it copies the write-ahead log, and only waits (its
        batches then go to the journal's thread) for its last few frames.

        Raises:
            sqlite3.Error: the write failed for another reason than a lock.
        """
        if self._fast is None or (self.node is not None and self._owner is None):
            return False
        if not self._lock.acquire(blocking=False):
            return False
        owner = self._owner
        try:
            try:
                record = records[0] if len(records) == 1 else None
                if owner is not None and record is not None and record.__class__ is TaskRecord:
                    # The usual batch of a chain (one task's end): its fenced statement alone, on
                    # a cursor kept for it (`_apply` makes a cursor, a set, a row per record).
                    row = (*record, record.exec_id, *owner)  # the columns in order, then the owner
                    fenced = [] if self._fast_cursor.execute(_OWNED_TASK, row).rowcount else [record.exec_id]
                else:
                    fenced = _apply(self._fast, records, owner)
            except sqlite3.OperationalError as exc:
                if _busy(exc):
                    return False
                raise
            self._written += len(records)
            if self._written >= CHECKPOINT_EVERY and self._background is None and not self._closing:
                self._background = threading.Thread(
                    target=self._checkpoint_beside, name="tukio-sqlite-checkpoint", daemon=True
                )
                self._background.start()
        finally:
            self._lock.release()
        if owner is not None and (fenced or self.lease_expired()):
            self._refused(records, fenced)
        return True

    def _refused(self, records: Sequence[Record], fenced: list[str]) -> None:
        """Give `on_fenced` the executions of `records` this node does not own (any more).

        When the node's lease ran out by the local clock (the process was
        paused, say), the executions it did write may have been taken over
        right after the commit: those are asked for too.
        """
        if self.lease_expired():
            gone = [i for i in self.lost({r.exec_id for r in records}) if i not in fenced]
            if gone:
                log.warning("SQLiteStore: node %s was late and lost %d execution(s)", self.node, len(gone))
                fenced = [*fenced, *gone]
        if fenced:
            log.warning("SQLiteStore: node %s no longer owns %d execution(s): writes refused", self.node, len(fenced))
            if self.on_fenced is not None:
                self.on_fenced(fenced)

    def _checkpoint_locked(self, mode: str) -> bool:
        """Copy the whole WAL into the database; the next commit starts the WAL again.

        The caller holds the lock, so no commit of this store runs meanwhile:
        a checkpoint racing with commits (as one in a thread of its own did)
        never catches up, and the WAL then never restarts: it grew without bound. Another process's
        open read can still hold it back: that is logged, and tried again
        after the next `CHECKPOINT_EVERY` records.

        Returns:
            True when every frame was copied.
        """
        self._written = 0
        if self._ckpt is None:
            return False
        try:
            busy, frames, copied = self._ckpt.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error:
            log.exception("SQLiteStore %r: checkpoint failed", self.path)
            return False
        if busy or frames != copied:
            log.warning(
                "SQLiteStore %r: checkpoint incomplete (%s of %s frames): a read holds it", self.path, copied, frames
            )
            return False
        return True

    def _checkpoint_beside(self) -> None:
        """Checkpoint the write-ahead log while the loop goes on committing (the store's thread).

        Most of the cost of a checkpoint is syncing the log's new frames and
        copying them: `CHECKPOINT_ROUNDS` PASSIVE checkpoints do that on a
        connection of their own, without the lock, so commits go on
        meanwhile; each copies what was committed while the one before ran.
        Then, under the lock (no commit of this store runs), a RESTART copies
        what is left, a few frames, so that the log starts again.
        """
        try:
            try:
                bulk = self._bulk
                if bulk is None and not self._closing:
                    bulk = self._bulk = self._connect(self._synchronous, timeout=0)
                for _ in range(CHECKPOINT_ROUNDS):
                    if bulk is not None:
                        bulk.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                log.exception("SQLiteStore %r: checkpoint failed", self.path)
            with self._lock:
                if self._ckpt is not None:
                    self._checkpoint_locked("RESTART")
        finally:
            self._background = None

    def _wait_for_checkpoint(self) -> None:
        """Wait until the checkpoint running beside the loop's commits, if any, is over."""
        background = self._background
        if background is not None and background is not threading.current_thread():
            background.join()

    def checkpoint(self) -> bool:
        """Copy the write-ahead log into the database and empty it (a TRUNCATE checkpoint).

        Returns:
            True when the log is empty; False when another process's read held it back.

        Raises:
            sqlite3.ProgrammingError: the store is closed.
        """
        self._wait_for_checkpoint()
        with self._lock:
            self._conn()
            return self._checkpoint_locked("TRUNCATE")

    def vacuum(self) -> None:
        """Rebuild the database file at its smallest size (SQLite's ``VACUUM``), then empty the WAL.

        It rewrites the whole file and needs as much free disk space again:
        run it when the engine is quiet. It also turns on incremental vacuum
        in a file made without it, so that `prune()` gives space back.

        Raises:
            sqlite3.ProgrammingError: the store is closed.
            sqlite3.Error: the vacuum failed (the database is unchanged).
        """
        self._wait_for_checkpoint()
        with self._lock:
            db = self._conn()
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("VACUUM")
            self._checkpoint_locked("TRUNCATE")

    def executions(
        self, *, state: str | Iterable[str] | None = None, template_id: str | None = None
    ) -> list[ExecutionInfo]:
        """List executions, oldest first (see `Store.executions`)."""
        where, params = self._filter(parse_states(state), template_id)
        with self._lock:
            rows = self._conn().execute(f"SELECT {COLUMNS} FROM executions{where} ORDER BY started", params).fetchall()
        return [execution_info(*row) for row in rows]

    @staticmethod
    def _filter(states: frozenset[str] | None, template_id: str | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if states is not None:
            clauses.append(f"state IN ({', '.join('?' * len(states))})" if states else "0")
            params.extend(sorted(states))
        if template_id is not None:
            clauses.append("template_id = ?")
            params.append(template_id)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def load(self, exec_id: str) -> dict[str, Any]:
        """Return the report of one execution (see `Store.load`).

        Raises:
            KeyError: no execution has that id.
            DamagedRecordError: a record of it cannot be read back.
        """
        with self._lock:
            db = self._conn()
            # fetchall: a statement left unfinished would keep a read open, and hold back checkpoints.
            found = db.execute(
                f"SELECT {COLUMNS}, coalesce((SELECT v.template FROM versions AS v WHERE v.version = "
                "executions.version), template), event FROM executions WHERE exec_id = ?",
                (exec_id,),
            ).fetchall()
            if not found:
                raise KeyError(f"no execution {exec_id!r} in the store")
            tasks = db.execute(
                "SELECT task_id, task_exec_id, state, started, ended, data, error FROM tasks WHERE exec_id = ?",
                (exec_id,),
            ).fetchall()
        row = found[0]
        execution = ExecutionRecord(
            row[0], row[1], row[2], row[3], row[4], row[5], template=row[7], event=row[8], version=row[6]
        )
        records = [TaskRecord(exec_id, t[0], t[1], t[2], t[3], t[4], t[5], t[6]) for t in tasks]
        return build_report(self.serializer, execution, records)

    def version_rows(
        self, *, template_id: str | None = None, version: str | None = None
    ) -> list[tuple[str, str | None, str | bytes]]:
        """The stored template versions (see `Store.version_rows`)."""
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT version, template_id, template FROM versions WHERE (? IS NULL OR template_id = ?) "
                    "AND (? IS NULL OR version = ?) ORDER BY created, version",
                    (template_id, template_id, version, version),
                )
                .fetchall()
            )
        return [(r[0], r[1], r[2]) for r in rows]

    def repin(self, exec_id: str, version: str, template: str | bytes, renames: dict[str, str]) -> None:
        """Pin an unfinished execution to another template version (see `Store.repin`)."""
        with self._lock:
            db = self._conn()
            with _transaction(db):
                found = db.execute(
                    "SELECT template_id FROM executions WHERE exec_id = ? AND state = ?", (exec_id, UNFINISHED)
                ).fetchall()
                if not found:
                    raise KeyError(f"no unfinished execution {exec_id!r} in the store")
                begin = ExecutionRecord(exec_id, found[0][0], UNFINISHED, iso_now(), template=template)
                _keep_version(db, begin._replace(version=version))
                db.execute("UPDATE executions SET version = ?, template = NULL WHERE exec_id = ?", (version, exec_id))
                kept = list(renames)
                moved = [(_MOVING + new, exec_id, old) for old, new in renames.items()]
                for table in ("tasks", "task_events"):
                    db.execute(
                        f"DELETE FROM {table} WHERE exec_id = ? AND task_id NOT IN ({', '.join('?' * len(kept))})",
                        (exec_id, *kept),
                    )
                    # Through a name no task has: two tasks may swap their ids.
                    db.executemany(f"UPDATE {table} SET task_id = ? WHERE exec_id = ? AND task_id = ?", moved)
                    db.execute(
                        f"UPDATE {table} SET task_id = substr(task_id, ?) "
                        "WHERE exec_id = ? AND substr(task_id, 1, ?) = ?",
                        (len(_MOVING) + 1, exec_id, len(_MOVING), _MOVING),
                    )

    def task_events(self, exec_id: str) -> dict[str, list[tuple[int, Any]]]:
        """The events journaled for the tasks of an execution (see `Store.task_events`)."""
        with self._lock:
            rows = (
                self._conn()
                .execute("SELECT task_id, seq, data, error FROM task_events WHERE exec_id = ?", (exec_id,))
                .fetchall()
            )
        return task_events(self.serializer, exec_id, rows)

    def prune(self, *, before: datetime | None = None, template_id: str | None = None) -> int:
        """Delete finished executions and give their space back (see `Store.prune`)."""
        clauses = ["state NOT IN (?, ?)"]
        params: list[Any] = [UNFINISHED, QUEUED]
        if before is not None:
            clauses.append("ended < ?")
            params.append(iso(before))
        if template_id is not None:
            clauses.append("template_id = ?")
            params.append(template_id)
        where = " AND ".join(clauses)
        self._wait_for_checkpoint()
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(f"DELETE FROM tasks WHERE exec_id IN (SELECT exec_id FROM executions WHERE {where})", params)
                db.execute(
                    f"DELETE FROM task_events WHERE exec_id IN (SELECT exec_id FROM executions WHERE {where})", params
                )
                count = db.execute(f"DELETE FROM executions WHERE {where}", params).rowcount
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            if count:
                # executescript: `execute` steps this statement once, and
                # each step frees one page. A no-op in a file without
                # incremental vacuum (see `vacuum`).
                db.executescript("PRAGMA incremental_vacuum")
                self._checkpoint_locked("TRUNCATE")
        return count

    # -- ownership (see tukio.cluster) ------------------------------------------------------------
    #: Events are shared through the file (see `publish`).
    shares_events = True

    def _own(self, step: Callable[..., Step], *args: Any, write: bool = False) -> Any:
        """Run a step of the ownership protocol (see `tukio.store._ownsql`); with `write`, under the write lock."""
        made = step(self._owning, *args)
        with self._lock:
            db = self._conn()
            if not write:
                return drive(made, lambda st: self._run_statement(db, st))
            with _transaction(db):
                return drive(made, lambda st: self._run_statement(db, st))

    def _joining_as(self, node: str) -> None:
        if not self._take_lock(node, wait=1.0):
            log.warning("SQLiteStore: node %s: another process holds its lock; that process is fenced", node)

    def _joined(self, node: str, epoch: int) -> None:
        self._owner = (node, epoch)

    def _beaten(self, node: str, beat: Beat) -> None:
        if beat == "replaced":
            self._release_lock()  # for the process that replaced this one
        elif self._held is None:  # (not before: a node pruned as dead must not make its lock file again)
            self._take_lock(node, wait=0)

    def _lock_path(self, node: str) -> str:
        name = urllib.parse.quote(node, safe="")
        if len(name) > 200:
            name = hashlib.sha256(node.encode()).hexdigest()
        return os.path.join(self.path + ".nodes", name + ".lock")

    def _take_lock(self, node: str, wait: float) -> bool:
        """Lock the node's lock file (exclusive, for as long as the node lives); False if another process holds it."""
        if self._held is not None:
            return True
        if sys.platform == "win32":  # pragma: no cover - no file locks: nodes live by their lease alone
            return False
        path = self._lock_path(node)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        held = open(path, "ab")  # noqa: SIM115 - kept open while the node lives
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    held.close()
                    return False
                time.sleep(0.01)  # another node may be checking it (briefly)
                continue
            self._held = held
            return True

    def _release_lock(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()  # closing the file releases its lock

    def _locked(self, node: str) -> bool:
        """True when a process holds `node`'s lock file (the node's process is alive)."""
        if sys.platform == "win32":  # pragma: no cover - no file locks: the lease decides
            return True
        try:
            fd = os.open(self._lock_path(node), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also releases the shared lock taken, if any
        return False

    def leave(self) -> None:
        """End the node's lease now and free its lock: what it still owns is taken over at once."""
        owner = self._owner
        if owner is None or self._db is None:
            return
        self._own(own.leave, *owner)
        self._release_lock()

    # -- overrun policies across nodes (see tukio.store._gate) --------------------------------------
    def admit(self, policy: OverrunPolicy, begin: ExecutionRecord, here: Collection[str]) -> tuple[Decision, list[str]]:
        """Apply `policy` to a trigger across every node; unless it skips, record `begin`.

        One write transaction (``BEGIN IMMEDIATE``: one node at a time): the
        unfinished executions of the template are read, the policy rules,
        and the new execution's begin record is inserted, owned by this node.
        Under 'abort-running' the executions of dead nodes are marked
        cancelled and those of live ones get a cancel request (their owner
        acts on it at its next heartbeat, within a third of its lease).

        Args:
            policy: the template's overrun policy.
            begin: the new execution's begin record (its template id names the template).
            here: the executions this node runs or is admitting now.

        Returns:
            The decision, and the executions the new one waits for before it
            starts (abort-running: those running here, and those requested).
            A node that was replaced (a newer epoch) is told to skip.
        """
        node, epoch = self._attached(), self._epoch()
        with self._lock:
            db = self._conn()
            with _transaction(db):
                rows = drive(
                    own.running(SQLITE_OWNING, node, epoch, begin.template_id), lambda st: self._run_statement(db, st)
                )
                if rows is None:
                    log.warning("SQLiteStore: node %s was replaced: trigger of %s skipped", node, begin.template_id)
                    return Decision.skip, []
                ruled = rule(policy, begin.exec_id, rows, here)
                if ruled.decision is Decision.skip:
                    return ruled.decision, []
                begin = _keep_version(db, begin)
                db.execute(
                    "INSERT OR IGNORE INTO executions (exec_id, template_id, state, started, template, event, "
                    "version, owner, epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        begin.exec_id,
                        begin.template_id,
                        UNFINISHED,
                        begin.start,
                        begin.template,
                        begin.event,
                        begin.version,
                        node,
                        epoch,
                    ),
                )
                ended = iso_now()
                db.executemany(  # made this node's: a zombie of the dead owner is fenced
                    "UPDATE executions SET state = 'cancelled', ended = ?, locked = 0, owner = ?, epoch = ? "
                    "WHERE exec_id = ? AND state = ?",
                    [(ended, node, epoch, i, UNFINISHED) for i in ruled.cancel_now],
                )
                db.executemany(
                    "INSERT OR IGNORE INTO cancels (exec_id, by_node, at) VALUES (?, ?, ?)",
                    [(i, node, time.time()) for i in ruled.request],
                )
        return ruled.decision, ruled.wait

    def prune_nodes(self, grace: float) -> list[str]:
        """Delete the rows and lock files of dead nodes with a default name, once they own no unfinished execution.

        Only nodes whose name was made for one engine (`default_node_name`:
        it never comes back), whose lock file no process holds, and whose
        lease expired more than `grace` seconds ago, are deleted; never this
        node. A zombie of a pruned node finds its row gone: its writes are
        refused, as those of a replaced node.

        Returns:
            The names of the nodes deleted.
        """
        node = self._attached()
        now = self.clock()
        pruned: list[str] = []
        with self._lock:
            db = self._conn()
            candidates = [
                r[0]
                for r in db.execute(
                    "SELECT n.name FROM nodes AS n WHERE n.ephemeral AND n.name != ? AND n.expires < ? "
                    "AND NOT EXISTS (SELECT 1 FROM executions AS x WHERE x.owner = n.name AND x.state = ?)",
                    (node, now - grace, UNFINISHED),
                ).fetchall()
            ]
            if not candidates:
                return []
            with _transaction(db):
                for name in candidates:
                    held = self._hold_dead_lock(name)
                    if held is False:
                        continue  # its process lives (paused): it is fenced when it comes back, not pruned
                    try:
                        gone = db.execute(
                            "DELETE FROM nodes WHERE name = ? AND expires < ? AND NOT EXISTS "
                            "(SELECT 1 FROM executions WHERE owner = ? AND state = ?)",
                            (name, now - grace, name, UNFINISHED),
                        ).rowcount
                        if gone:
                            pruned.append(name)
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(self._lock_path(name))
                    finally:
                        if held is not None and held is not False:
                            os.close(held)
        if pruned:
            log.info("SQLiteStore: pruned %d dead node(s)", len(pruned))
        return pruned

    def _hold_dead_lock(self, node: str) -> int | bool | None:
        """Lock a dead node's lock file (to delete it): its descriptor; None when it has none; False when held."""
        if sys.platform == "win32":  # pragma: no cover - no lock files
            return None
        try:
            fd = os.open(self._lock_path(node), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        return fd

    # -- management (see tukio.manage) -------------------------------------------------------------
    def admin(self) -> SQLAdmin:
        """The queries and actions of `tukio.manage` on this file (see `tukio.store._admin`)."""
        return SQLAdmin(SQLITE, Runner(self._admin_fetch, self._admin_execute, self._live, self._node_rows))

    def _admin_fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn().execute(query, params).fetchall()

    def _admin_execute(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        with self._lock:
            db = self._conn()
            with _transaction(db):
                return [db.execute(query, params).rowcount for query, params in statements]

    def _node_rows(self) -> list[tuple[str, int, float]]:
        # Leases run on the host's lease clock (see `tukio.store._lease`): shown on the wall clock.
        rows = self._admin_fetch("SELECT name, epoch, expires FROM nodes ORDER BY name", ())
        shift = time.time() - self.clock()
        return [(name, epoch, expires + shift) for name, epoch, expires in rows]

    # -- events shared by the processes (see tukio.cluster) -----------------------------------------
    def publish(self, data: Any, topic: str | None) -> int:
        """Keep `data` (on `topic`) for the other processes sharing the file.

        SQLite cannot wake the other processes up: each reads the new events
        every `event_poll` seconds while a task of it listens (see `tukio.cluster`).
        While no other node is known on the file (one process alone), nothing
        is kept: a node joins before its first workflow begins, so its tasks
        never miss an event. Whether the others are known does not depend on
        this process's clock (one that runs ahead would see every lease
        expired and keep nothing): a node counts until it is pruned.

        Returns:
            The event's id (ids grow in the order events are published, and
            never go back); 0 when no other node is alive.

        Raises:
            Exception: the serializer cannot encode `data`.
        """
        blob = self.serializer.dumps(data)
        with self._lock:
            others = self._conn().execute("SELECT 1 FROM nodes WHERE name IS NOT ? LIMIT 1", (self.node,))
            if not others.fetchall():
                return 0
            cursor = self._conn().execute(
                "INSERT INTO events (origin, topic, data, at) VALUES (?, ?, ?, ?)",
                (self.node, topic, blob, time.time()),
            )
            self._written += 1  # the write-ahead log stays bounded with events alone too
            if self._written >= CHECKPOINT_EVERY and self._background is None:
                self._checkpoint_locked("RESTART")
        return int(cursor.lastrowid or 0)

    def event_cursor(self) -> int:
        """The id of the last event published so far (0: none ever)."""
        with self._lock:
            rows = self._conn().execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchall()
        return int(rows[0][0]) if rows else 0

    def events_after(self, cursor: int, *, everyone: bool = False) -> list[tuple[int, str | None, str | None, Any]]:
        """Events other nodes published after `cursor`, in order: ``(id, origin, topic, data)`` (1,000 at most).

        With `everyone`, those of this node too. Ids become visible in their
        order: SQLite has one writer at a time, and each event is its own
        transaction.
        """
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT id, origin, topic, data FROM events WHERE id > ? AND origin IS NOT ? "
                    "ORDER BY id LIMIT 1000",
                    (cursor, None if everyone else self.node),
                )
                .fetchall()
            )
        return [(r[0], r[1], r[2], self.serializer.loads(r[3])) for r in rows]

    def prune_events(self, older_than: float) -> int:
        """Delete the events published more than `older_than` seconds ago; return how many."""
        with self._lock:
            return int(self._conn().execute("DELETE FROM events WHERE at < ?", (time.time() - older_than,)).rowcount)

    def listen(self, wake: Callable[[], None]) -> bool:
        """SQLite cannot signal other processes: never calls `wake` (they poll, see `event_poll`); returns False."""
        return False

    def listen_cancels(self, wake: Callable[[], None]) -> bool:
        """SQLite cannot signal other processes: never calls `wake` (cancel requests are read); returns False."""
        return False

    def admit_soon(
        self, policy: OverrunPolicy, begin: ExecutionRecord, here: Collection[str]
    ) -> concurrent.futures.Future[tuple[Decision, list[str]]] | None:
        """None: an admission is one local transaction, made by `admit` (on a thread of the caller's)."""
        return None

    def close(self) -> None:
        """Close the database and free the node's lock (idempotent); the store cannot be used afterwards."""
        with self._lock:
            self._closing = True  # no checkpoint starts any more
        self._wait_for_checkpoint()
        with self._lock:
            self._close_connections()
        self._release_lock()

    def _close_connections(self) -> None:
        for db in (self._fast, self._ckpt, self._bulk, self._db):
            if db is not None:
                db.close()
        self._fast = self._ckpt = self._bulk = self._db = None

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r}>"

    #: One write transaction on a connection, and whether an error says the file is locked (for `SQLiteFlow`).
    _transaction = staticmethod(_transaction)
    _busy = staticmethod(_busy)
