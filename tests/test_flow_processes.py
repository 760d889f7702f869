"""Flow-control slots under process faults (issue 21): a node that dies or stalls never leaks a slot.

Node A (a process) holds both slots of a ``"concurrency": 2`` template
with two executions whose bodies never end there; then it is SIGKILLed,
or SIGSTOPped past its lease. Node B (this process) queues a third
trigger: it waits while A's executions hold the slots, B takes them over
once A's lease has lapsed (their bodies end at once on B), and the third
then runs. The store never holds more than two unfinished executions.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tukio import Engine, Event, WorkflowTemplate
from tukio.store import PostgresStore, SQLiteStore

WORKER = Path(__file__).with_name("flow_worker.py")
LEASE = 1.0


@pytest.fixture(params=["sqlite", "postgres"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The journal both nodes share, as the worker takes it."""
    if request.param == "sqlite":
        yield str(tmp_path / "journal.db")
    else:
        dsn, schema = request.getfixturevalue("pg_schema")
        yield f"{dsn}#{schema}"


def _store(spec: str) -> Any:
    if spec.startswith("postgresql://"):
        dsn, _, schema = spec.partition("#")
        return PostgresStore(dsn, schema=schema)
    return SQLiteStore(spec)


def _node_a(spec: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), spec, "a", str(LEASE)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(WORKER.parent), os.getenv("PYTHONPATH")]))},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # bounded: the worker gives up after 30 s
    if line.strip() != "HOLDING":
        proc.kill()
        proc.wait(5)
        pytest.fail(f"node a did not start its executions: {line!r}")
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["kill", "stop"])
async def test_a_lost_node_frees_its_slots_once_taken_over(spec: str, fault: str, registered: Any) -> None:
    ran: list[Any] = []

    async def body(event: Event) -> None:
        ran.append(event.data)

    registered("fq-body", body)
    proc = _node_a(spec)
    store = engine = None
    try:
        store = _store(spec)
        engine = Engine(store=store, node="b", lease=LEASE)
        proc.send_signal(signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
        template = {
            "id": "fq",
            "policy": "start-new",
            "concurrency": 2,
            "tasks": [{"id": "t1", "name": "fq-body"}],
            "graph": {"t1": []},
        }
        await engine.load(WorkflowTemplate.from_dict(template))
        third = await engine.trigger("fq", {"n": 2})
        assert third is not None

        async def watch() -> None:  # sample the slots held while it waits
            while not third.done():
                infos = await asyncio.to_thread(store.executions, template_id="fq")
                assert sum(i.state == "pending" for i in infos) <= 2
                await asyncio.wait([third], timeout=0.05)

        await asyncio.wait_for(watch(), 30)
        assert third.result() is not None
        assert sorted(d["n"] for d in ran) == [0, 1, 2]  # a's two, taken over and run here, then the third
        await engine.flush()
        infos = await asyncio.to_thread(store.executions, template_id="fq")
        assert sorted(i.state for i in infos) == ["finished"] * 3
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        if engine is not None:
            await asyncio.wait_for(engine.stop(force=True), 10)
        if store is not None:
            store.close()
