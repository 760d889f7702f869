"""The contract of a store several nodes share, held by SQLite and PostgreSQL alike (one suite, two dialects).

Leases run out on an injected clock (SQLite) or by an update of the
node's row (PostgreSQL keeps leases on the server's clock); a node's own
lease deadline is read on its store's injected `clock`: no test waits for
a real lease.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tukio.cluster import LeasedStore
from tukio.store import SQLiteStore
from tukio.store.base import ExecutionRecord, TaskRecord

LATER = "2026-01-01T00:00:01.000000+00:00"


def begin(exec_id: str, template_id: str = "t", start: str = "2026-01-01T00:00:00.000000+00:00") -> ExecutionRecord:
    tmpl = '{"id":"t","tasks":[{"id":"a"}]}'
    return ExecutionRecord(exec_id, template_id, "pending", start, template=tmpl, event="{}")


def end_task(exec_id: str) -> TaskRecord:
    return TaskRecord(exec_id, "a", "x", "finished", None, None, '{"outputs":1}')


class FakeClock:
    """A lease clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Shared:
    """One journal several stores open, and how a test moves its leases."""

    def __init__(self, new: Callable[[], Any], sql: Callable[[str], list[tuple[Any, ...]]], past: str) -> None:
        self._new = new
        self.sql = sql
        self.past = past  # SQL: a moment ago on the lease clock
        self.made: list[Any] = []

    def store(self) -> Any:
        """A new store on the shared journal, reading its own lease deadline on a fake clock."""
        store = self._new()
        self.made.append(store)
        return store

    def expire(self, node: str) -> None:
        """End `node`'s lease in the journal (a node paused past it: its process, its lock, still live)."""
        self.sql(f"UPDATE nodes SET expires = {self.past} WHERE name = '{node}'")

    @staticmethod
    def late(store: Any) -> None:
        """Move `store`'s own clock past its lease (the process was paused)."""
        store.clock.now += store.lease + 1


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Shared]:
    if request.param == "sqlite":
        import sqlite3

        path = tmp_path / "leased.db"
        clock = FakeClock()  # one host: every process reads the same lease clock

        def sqlite_sql(query: str) -> list[tuple[Any, ...]]:
            db = sqlite3.connect(path, isolation_level=None)
            try:
                return db.execute(query.replace("{past}", repr(clock.now - 1))).fetchall()
            finally:
                db.close()

        made = Shared(lambda: SQLiteStore(path, clock=clock), sqlite_sql, "{past}")
    else:
        import asyncpg

        from tukio.store.postgres import PostgresStore

        dsn, schema = request.getfixturevalue("pg_schema")

        def pg_sql(query: str) -> list[tuple[Any, ...]]:
            for table in ("nodes", "executions", "tasks"):
                query = query.replace(f" {table}", f' "{schema}".{table}')

            async def run() -> list[tuple[Any, ...]]:
                conn = await asyncpg.connect(dsn)
                try:
                    return [tuple(r) for r in await conn.fetch(query)]
                finally:
                    await conn.close()

            return asyncio.run(run())

        def new_pg() -> Any:
            store = PostgresStore(dsn, schema=schema)
            store.clock = FakeClock()  # the node's own deadline only: leases are on the server's clock
            return store

        made = Shared(new_pg, pg_sql, "now() - interval '1 second'")
    yield made
    for store in made.made:
        store.close()


def ids(infos: list[Any]) -> list[str]:
    return [i.exec_id for i in infos]


def test_bad_attach_and_calls_before_attach(shared: Shared) -> None:
    store = shared.store()
    assert isinstance(store, LeasedStore)
    with pytest.raises(ValueError, match="lease must be a positive"):
        store.attach("a", lease=0)
    with pytest.raises(ValueError, match="node must not be empty"):
        store.attach("")
    with pytest.raises(RuntimeError, match="no node attached"):
        store.join()
    with pytest.raises(RuntimeError, match="no node attached"):
        store.owned()
    store.leave()  # nothing to end
    assert store.attach(lease=1.0).startswith("node-")
    with pytest.raises(RuntimeError, match="already writes for node"):
        store.attach("other")


def test_claims_leases_and_fencing(shared: Shared, caplog: pytest.LogCaptureFixture) -> None:
    a, b = shared.store(), shared.store()
    fenced: list[list[str]] = []
    a.on_fenced = fenced.append
    a.attach("a", lease=30)
    b.attach("b", lease=30)
    a.write([begin("e1"), begin("e2", start=LATER)])  # writes join by themselves
    assert a.epoch == 1
    assert ids(a.owned()) == ["e1", "e2"]
    assert b.claim(["t"]) == []  # a is alive
    assert a.heartbeat() == "alive"
    shared.expire("a")  # paused past its lease (a paused process keeps its lock file): the lease wins
    assert ids(b.claim(["t"], limit=1)) == ["e1"]  # one claim, at most `limit`, oldest first
    assert b.claim(["other"]) == []
    assert ids(b.claim(["t"])) == ["e2"]
    assert b.claim(["t"]) == []
    # A commit that returns after a's lease ran out by its own clock asks what a lost: e1 once.
    a.write([begin("e3")])
    assert fenced == []  # its lease runs by its own clock: nothing asked
    shared.late(a)
    assert a.lease_expired()
    a.write([end_task("e1"), end_task("e3")])  # asked: e1 is gone, e3 is still a's
    assert fenced == [["e1"]]
    assert "no longer owns 1 execution(s)" in caplog.text
    assert b.load("e3")["tasks"][0]["exec"]["state"] == "finished"
    fenced.clear()
    assert a.heartbeat() == "late"
    assert a.lease_expired()  # lapsed until a heartbeat finds its lease running
    assert sorted(a.lost(["e1", "e2", "e3"])) == ["e1", "e2"]
    assert a.lost([]) == []
    # Its writes for them are refused (on the thread's path and the loop's), its own are written.
    a.write([end_task("e2"), begin("e4")])
    assert fenced == [["e2"]]
    assert b.load("e2")["tasks"][0]["exec"] is None
    assert sorted(ids(a.owned())) == ["e3", "e4"]
    b.write([end_task("e2")])
    assert b.load("e2")["tasks"][0]["exec"]["state"] == "finished"
    assert a.heartbeat() == "alive"
    assert not a.lease_expired()
    assert b.claim(["t"]) == []  # a is alive again, and keeps e3 and e4


def test_a_restarted_node_takes_its_executions_back_and_fences_the_old_one(shared: Shared) -> None:
    old = shared.store()
    fenced: list[str] = []
    old.on_fenced = fenced.extend
    old.attach("r", lease=30)
    old.write([begin("e1")])
    old.leave()
    new = shared.store()
    new.attach("r", lease=30)
    assert new.join() == 2
    assert ids(new.owned()) == ["e1"]
    assert old.heartbeat() == "replaced"
    old.write([end_task("e1")])  # one task record: one statement, the same checks
    assert fenced == ["e1"]
    old.write([end_task("e1"), begin("e2")])  # neither an execution it had, nor a new one
    assert sorted(fenced) == ["e1", "e1", "e2"]
    assert new.load("e1")["tasks"][0]["exec"] is None
    assert ids(new.executions()) == ["e1"]


def test_claims_are_atomic(shared: Shared) -> None:
    seed = shared.store()
    seed.write([begin(f"e{n:03}") for n in range(200)])  # written by no node: anyone may claim them
    claimers = [shared.store() for _ in range(3)]
    for n, store in enumerate(claimers):
        store.attach(f"c{n}", lease=30)
        store.join()
    barrier = threading.Barrier(3)
    taken: list[list[str]] = [[] for _ in claimers]

    def claim_all(n: int) -> None:
        barrier.wait()
        while batch := claimers[n].claim(["t"], limit=7):
            taken[n].extend(ids(batch))

    threads = [threading.Thread(target=claim_all, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(e for part in taken for e in part) == [f"e{n:03}" for n in range(200)]  # each exactly once
    for n, store in enumerate(claimers):
        assert sorted(ids(store.owned())) == sorted(taken[n])


def test_claims_and_stranded_executions(shared: Shared) -> None:
    orphan = shared.store()  # executions written by no node (an older tukio, say)
    orphan.write([begin("o1"), begin("o2", "other")])
    gone = shared.store()
    gone.attach("gone", lease=30)
    gone.write([begin("g1", "other")])
    gone.leave()
    live = shared.store()
    live.attach("live", lease=30)
    live.write([begin("l1", "other")])
    b = shared.store()
    b.attach("b", lease=30)
    assert b.claim([]) == []
    assert sorted(ids(b.stranded(["t"]))) == ["g1", "o2"]  # not l1: its node lives
    assert ids(b.claim(["t"])) == ["o1"]
    assert b.lost(["o1", "o2"]) == ["o2"]


def test_cancel_requests_and_unlocks(shared: Shared) -> None:
    from tukio.policy import Decision, OverrunPolicy

    a, b = shared.store(), shared.store()
    a.attach("a", lease=30)
    b.attach("b", lease=30)
    assert a.admit(OverrunPolicy.SKIP_UNTIL_UNLOCK, begin("x1"), ["x1"]) == (Decision.start, [])
    assert b.admit(OverrunPolicy.SKIP_UNTIL_UNLOCK, begin("x2"), []) == (Decision.skip, [])  # x1 holds its lock
    a.unlock(["x1"])
    assert b.admit(OverrunPolicy.SKIP_UNTIL_UNLOCK, begin("x2"), []) == (Decision.start, [])
    # 'abort-running' asks the owner of a live node's execution to cancel it; the owner hears it.
    assert b.admit(OverrunPolicy.ABORT_RUNNING, begin("x3"), ["x2"]) == (Decision.abort_then_start, ["x1", "x2"])
    assert a.cancel_requests() == ["x1"]
    a.mark_cancelled(["x1"])
    assert a.cancel_requests() == []
    assert sorted(b.unfinished_among(["x1", "x2", "x3"])) == ["x2", "x3"]
    # A request for a node that dies before it acts on it is settled by whoever reads it: cancelled.
    assert a.admit(OverrunPolicy.START_NEW, begin("y1", "u"), []) == (Decision.start, [])
    assert b.admit(OverrunPolicy.ABORT_RUNNING, begin("y2", "u"), []) == (Decision.abort_then_start, ["y1"])
    a.leave()
    assert b.cancel_requests() == []  # none of its own
    assert b.unfinished_among(["y1", "y2"]) == ["y2"]
    assert b.load("y1")["exec"]["state"] == "cancelled"
