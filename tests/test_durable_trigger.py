"""A trigger is durable when it returns: the begin record, with its data, is committed first.

In-process, a store whose commits the test holds shows that `trigger()`,
`data_received()` and `run_once()` do not return (and no task body starts)
while the begin record waits; a worker process killed right after
`trigger()` returned shows the execution is in the journal after the kill.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support import template

from tukio import Engine, Workflow, WorkflowTemplate
from tukio.policy import Decision, OverrunPolicy
from tukio.store import MemoryStore, SQLiteStore
from tukio.store.base import ExecutionRecord, Record
from tukio.task._start import EAGER_SUPPORTED

WORKER = Path(__file__).with_name("trigger_worker.py")
POLICIES = ["start-new", "skip", "skip-until-unlock", "abort-running"]


class Hold:
    """A gate a store's commits pass through: closed, they wait (in the journal's thread) until it opens."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()

    def close(self) -> None:
        self.open.clear()
        self.entered.clear()

    def passing(self) -> None:
        """(In the committing thread.) Wait while the gate is closed."""
        if not self.open.is_set():
            self.entered.set()
            assert self.open.wait(10), "the test never released the commit"

    async def reached(self) -> None:
        """Wait until a commit waits at the closed gate."""
        assert await asyncio.to_thread(self.entered.wait, 10), "no commit reached the held store"


class HeldMemory(MemoryStore):
    """A `MemoryStore` that commits from the journal's thread, through a `Hold`."""

    blocking = True

    def __init__(self) -> None:
        super().__init__()
        self.hold = Hold()

    def write(self, records: Sequence[Record]) -> None:
        self.hold.passing()
        super().write(records)


class HeldSQLite(SQLiteStore):
    """A `SQLiteStore` (a node) whose journal commits and admissions pass through a `Hold`."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.hold = Hold()

    def write_nowait(self, records: Sequence[Record]) -> bool:
        return False  # every commit from the journal's thread, where it can be held

    def write(self, records: Sequence[Record]) -> None:
        self.hold.passing()
        super().write(records)

    def admit(self, policy: OverrunPolicy, begin: ExecutionRecord, here: Collection[str]) -> tuple[Decision, list[str]]:
        self.hold.passing()
        return super().admit(policy, begin, here)


@pytest.fixture(params=["memory", "sqlite"])
def held(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HeldMemory | HeldSQLite]:
    store: HeldMemory | HeldSQLite = HeldMemory() if request.param == "memory" else HeldSQLite(tmp_path / "j.db")
    yield store
    store.hold.open.set()
    if isinstance(store, SQLiteStore):
        store.close()


@pytest.fixture
def body(registered: Callable[..., Any], task_name: Callable[[str], str]) -> tuple[str, list[Any]]:
    """``(name, ran)``: a task that notes its data in `ran` as its body starts."""
    ran: list[Any] = []
    name = task_name("durable-body")

    async def note(event: Any) -> None:
        ran.append(event.data)

    registered(name, note)
    return name, ran


def one_step(name: str, policy: str = "start-new", tid: str = "durable") -> WorkflowTemplate:
    return template([("a", name)], {}, id=tid, policy=policy, topics=["t"])


async def not_before_release(store: HeldMemory | HeldSQLite, call: asyncio.Task[Any], ran: list[Any]) -> Any:
    """Check `call` waits (and no body ran) while the store holds the commit; release it; return its result."""
    await store.hold.reached()
    await asyncio.sleep(0)  # the call had every chance to go on
    assert not call.done(), "returned before the begin record was committed"
    assert ran == [], "a task body started before the begin record was committed"
    store.hold.open.set()
    return await asyncio.wait_for(call, 10)


@pytest.mark.parametrize("policy", POLICIES)
async def test_trigger_returns_once_the_begin_record_is_committed(
    held: HeldMemory | HeldSQLite, body: tuple[str, list[Any]], policy: str
) -> None:
    name, ran = body
    engine = Engine(store=held)
    await engine.load(one_step(name, policy))
    held.hold.close()
    workflow = await not_before_release(held, asyncio.create_task(engine.trigger("durable", {"n": 1})), ran)
    assert isinstance(workflow, Workflow)
    await asyncio.wait_for(workflow, 10)
    assert ran == [{"n": 1}]
    await engine.flush()
    assert held.load(workflow.uid)["exec"]["state"] == "finished"
    await asyncio.wait_for(engine.stop(), 10)


async def test_data_received_and_run_once_return_once_their_begin_records_are_committed(
    held: HeldMemory | HeldSQLite, body: tuple[str, list[Any]]
) -> None:
    name, ran = body
    engine = Engine(store=held)
    await engine.load(one_step(name, "start-new", "one"))
    await engine.load(one_step(name, "skip", "two"))
    held.hold.close()
    started = await not_before_release(held, asyncio.create_task(engine.data_received({"n": 2}, "t")), ran)
    assert [w.template.uid for w in started] == ["one", "two"]
    await asyncio.wait_for(asyncio.gather(*started), 10)
    ran.clear()
    held.hold.close()
    once = await not_before_release(held, asyncio.create_task(engine.run_once(one_step(name), {"n": 3})), ran)
    await asyncio.wait_for(once, 10)
    await engine.flush()
    for workflow in [*started, once]:
        assert held.load(workflow.uid)["exec"]["state"] == "finished"
    await asyncio.wait_for(engine.stop(), 10)


async def test_an_aborting_trigger_is_durable_before_the_aborted_instance_ends(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    """'abort-running' on one engine: the new begin is committed at once, its root starts once the old one ended."""
    release = asyncio.Event()
    name = task_name("durable-slow-cancel")

    async def slow(event: Any) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()  # a task that takes its time to end once cancelled

    registered(name, slow)
    store = HeldMemory()
    engine = Engine(store=store)
    await engine.load(one_step(name, "abort-running"))
    old = await engine.trigger("durable", {"n": 1})
    assert old is not None
    new = await asyncio.wait_for(engine.trigger("durable", {"n": 2}), 10)
    assert new is not None
    assert not old.done()
    assert store.load(new.uid)["exec"]["state"] == "pending"  # durable, waiting for the old one
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(old, 10)
    await asyncio.wait_for(engine.stop(force=True), 10)


async def test_a_trigger_whose_data_cannot_be_stored_returns_its_failed_workflow(
    held: HeldMemory | HeldSQLite, body: tuple[str, list[Any]]
) -> None:
    name, ran = body
    engine = Engine(store=held)
    await engine.load(one_step(name))
    workflow = await asyncio.wait_for(engine.trigger("durable", {"n": object()}), 10)
    assert workflow is not None
    with pytest.raises(Exception, match="cannot be stored"):
        await asyncio.wait_for(workflow, 10)
    assert ran == []
    await asyncio.wait_for(engine.stop(), 10)


@pytest.mark.skipif(not EAGER_SUPPORTED, reason="eager start needs Python 3.12+")
async def test_eager_start_runs_the_root_once_the_begin_is_committed(body: tuple[str, list[Any]]) -> None:
    name, ran = body
    store = HeldMemory()
    engine = Engine(store=store, eager_start=True)
    await engine.load(one_step(name))
    store.hold.close()
    workflow = await not_before_release(store, asyncio.create_task(engine.trigger("durable", {"n": 4})), ran)
    assert workflow is not None
    assert ran == [{"n": 4}]  # started eagerly, inside the commit's callback, before trigger() returned
    await asyncio.wait_for(workflow, 10)
    await asyncio.wait_for(engine.stop(), 10)


# -- killed right after trigger() returned ---------------------------------------------------------
def _kill_after_trigger(store: str, where: str, policy: str, seed: int) -> dict[str, int]:
    """Run the worker: it prints what trigger() returned, then kills itself; return ``{exec id: i}``."""
    proc = subprocess.run(
        [sys.executable, str(WORKER), store, where, policy, str(seed)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == -9, proc.stderr
    said = dict(line.split() for line in proc.stdout.splitlines())
    assert said, proc.stderr
    return {exec_id: int(i) for exec_id, i in said.items()}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("policy", ["start-new", "skip-until-unlock"])
def test_an_execution_trigger_returned_survives_a_sigkill(
    kind: str, policy: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "postgres":
        dsn, schema = request.getfixturevalue("pg_schema")
        where = f"{dsn}#{schema}"
    else:
        where = str(tmp_path / "killed.db")
    seeds = random.Random(f"{kind}-{policy}")
    # Two kills where the journal commits the begin, one where the admission does (within the CI budget).
    for _ in range(2 if policy == "start-new" else 1):
        ids = _kill_after_trigger(kind, where, policy, seeds.randrange(1 << 16))
        store: Any
        if kind == "postgres":
            from tukio.store.postgres import PostgresStore

            store = PostgresStore(dsn, schema=schema)
        else:
            store = SQLiteStore(where)
        try:
            known = {info.exec_id: info for info in store.executions()}
            for exec_id, i in ids.items():
                assert exec_id in known, f"trigger() returned {exec_id}, the journal lost it"
                assert store.load(exec_id)["exec"]["event"] == {"i": i}
        finally:
            store.close()
