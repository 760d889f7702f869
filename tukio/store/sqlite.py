"""`SQLiteStore`: the journal in an SQLite database (standard-library `sqlite3`, WAL mode)."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from tukio.store.base import (
    UNFINISHED,
    ExecutionInfo,
    ExecutionRecord,
    Record,
    Serializer,
    Store,
    TaskRecord,
    build_report,
    execution_info,
    iso,
    parse_states,
)

__all__ = ["CHECKPOINT_EVERY", "WAL_SIZE_LIMIT", "SQLiteStore"]

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
_BUSY = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED

_SCHEMA = """
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
"""

_UPSERT_EXECUTION = """
INSERT INTO executions (exec_id, template_id, state, started, ended, error, template, event)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (exec_id) DO UPDATE SET
    template_id = coalesce(excluded.template_id, template_id),
    state = excluded.state,
    started = coalesce(excluded.started, started),
    ended = excluded.ended,
    error = excluded.error,
    template = coalesce(excluded.template, template),
    event = coalesce(excluded.event, event)
"""

_UPSERT_TASK = """
INSERT OR REPLACE INTO tasks (exec_id, task_id, task_exec_id, state, started, ended, data, error)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""

_COLUMNS = "exec_id, template_id, state, started, ended, error"


def _apply(db: sqlite3.Connection, records: Sequence[Record]) -> None:
    """Write `records` through `db` in one transaction (a lone statement is one already)."""
    if len(records) == 1:
        _upsert(db, records[0])
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for r in records:
            _upsert(db, r)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _upsert(db: sqlite3.Connection, r: Record) -> None:
    if isinstance(r, TaskRecord):
        db.execute(_UPSERT_TASK, (r.exec_id, r.task_id, r.task_exec_id, r.state, r.start, r.end, r.data, r.error))
    else:
        db.execute(_UPSERT_EXECUTION, (r.exec_id, r.template_id, r.state, r.start, r.end, r.error, r.template, r.event))


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


class SQLiteStore(Store):
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

    The write-ahead log stays bounded: every `CHECKPOINT_EVERY` records the
    journal's thread copies it into the database while no write runs, so the
    copy completes and the log starts again from its beginning, cut back to
    `WAL_SIZE_LIMIT` bytes. Only another process keeping a read open for
    long can hold it back.

    `prune()` gives the space of what it deletes back to the file system (a
    file made without SQLite's incremental vacuum, by an earlier development
    version or another tool, needs one `vacuum()` first).

    Args:
        path: the database file (created when missing).
        serializer: encodes data (`JSONSerializer` when None).
        synchronous: SQLite's ``synchronous`` setting, "NORMAL" or "FULL".
        write_on_loop: let the journal commit on the event loop when that
            cannot wait (only with "NORMAL").

    Raises:
        ValueError: unknown `synchronous` value.
        sqlite3.Error: the database cannot be opened.
    """

    blocking = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        serializer: Serializer | None = None,
        synchronous: str = "NORMAL",
        write_on_loop: bool = True,
    ) -> None:
        super().__init__(serializer)
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._written = 0  # records written since the last checkpoint
        # One connection shared by the journal thread and the application,
        # serialised by the lock.
        self._db: sqlite3.Connection | None = None
        # The event loop's own connection: never waits for a lock, never
        # checkpoints (that may fsync), so a commit is one append to the WAL.
        self._fast: sqlite3.Connection | None = None
        # Checkpoints, always under the lock: a commit never runs meanwhile.
        self._ckpt: sqlite3.Connection | None = None
        try:
            self._db = self._connect(synchronous.upper(), timeout=10.0)
            self._db.text_factory = _text
            # Only takes effect in a new file, before its first table.
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self._ckpt = self._connect(synchronous.upper(), timeout=CHECKPOINT_WAIT)
            if write_on_loop and synchronous.upper() == "NORMAL":
                self._fast = self._connect("NORMAL", timeout=0)
        except BaseException:
            self._close_connections()
            raise

    def _connect(self, synchronous: str, timeout: float) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=timeout)
        try:
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
        with self._lock:
            _apply(self._conn(), records)
            self._written += len(records)
            if self._written >= CHECKPOINT_EVERY:
                self._checkpoint_locked("RESTART")

    def write_nowait(self, records: Sequence[Record]) -> bool:
        """Apply `records` now, unless the database or the store is busy (see `Store.write_nowait`).

        Only with ``synchronous="NORMAL"``, where a commit does not fsync.
        Once `CHECKPOINT_EVERY` records were written it declines too: the
        next write then comes from the journal's thread (`write`), which
        checkpoints the write-ahead log, so the loop never waits for that.

        Raises:
            sqlite3.Error: the write failed for another reason than a lock.
        """
        if self._fast is None or self._written >= CHECKPOINT_EVERY or not self._lock.acquire(blocking=False):
            return False
        try:
            try:
                _apply(self._fast, records)
            except sqlite3.OperationalError as exc:
                if _busy(exc):
                    return False
                raise
            self._written += len(records)
        finally:
            self._lock.release()
        return True

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

    def checkpoint(self) -> bool:
        """Copy the write-ahead log into the database and empty it (a TRUNCATE checkpoint).

        Returns:
            True when the log is empty; False when another process's read held it back.

        Raises:
            sqlite3.ProgrammingError: the store is closed.
        """
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
            rows = self._conn().execute(f"SELECT {_COLUMNS} FROM executions{where} ORDER BY started", params).fetchall()
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
                f"SELECT {_COLUMNS}, template, event FROM executions WHERE exec_id = ?", (exec_id,)
            ).fetchall()
            if not found:
                raise KeyError(f"no execution {exec_id!r} in the store")
            tasks = db.execute(
                "SELECT task_id, task_exec_id, state, started, ended, data, error FROM tasks WHERE exec_id = ?",
                (exec_id,),
            ).fetchall()
        row = found[0]
        execution = ExecutionRecord(row[0], row[1], row[2], row[3], row[4], row[5], template=row[6], event=row[7])
        records = [TaskRecord(exec_id, t[0], t[1], t[2], t[3], t[4], t[5], t[6]) for t in tasks]
        return build_report(self.serializer, execution, records)

    def prune(self, *, before: datetime | None = None, template_id: str | None = None) -> int:
        """Delete finished executions and give their space back (see `Store.prune`)."""
        clauses = ["state != ?"]
        params: list[Any] = [UNFINISHED]
        if before is not None:
            clauses.append("ended < ?")
            params.append(iso(before))
        if template_id is not None:
            clauses.append("template_id = ?")
            params.append(template_id)
        where = " AND ".join(clauses)
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(f"DELETE FROM tasks WHERE exec_id IN (SELECT exec_id FROM executions WHERE {where})", params)
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

    def close(self) -> None:
        """Close the database (idempotent); the store cannot be used afterwards."""
        with self._lock:
            self._close_connections()

    def _close_connections(self) -> None:
        for db in (self._fast, self._ckpt, self._db):
            if db is not None:
                db.close()
        self._fast = self._ckpt = self._db = None

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r}>"
