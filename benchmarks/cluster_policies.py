"""The cost of an overrun policy decided across nodes (one engine on a shared store).

For each store (the local PostgreSQL, in a schema of its own dropped at the
end, and an SQLite file in a temporary directory) and each policy, it runs N
one-step workflows one after the other (trigger, wait for the end, flush)
and reports the median time of `trigger()` (the admission: under 'skip' one
transaction under the template's lock; under 'start-new' nothing is asked)
and of the whole workflow. Then, with two nodes (two engines on one loop,
lease 3 s), the time from a trigger under 'abort-running' on node B to the
end of the instance it aborted on node A (PostgreSQL: the request is
signalled; SQLite: A reads it at its heartbeat, every second), and on to the
start of B's instance.

    python benchmarks/cluster_policies.py [--dsn DSN] [--workflows 500] [--aborts 20]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from tukio import Engine, Event, register
from tukio.store import SQLiteStore
from tukio.store.postgres import PostgresStore

DSN = "postgresql://postgres@127.0.0.1:5432/test"


@register("bench-policy-step")
async def step(event: Event) -> None:
    return None


async def measure(store: Any, policy: str, count: int) -> tuple[float, float]:
    engine = Engine(store=store, node="bench", lease=30)
    await engine.load(
        {"id": f"p-{policy}", "policy": policy, "tasks": [{"id": "t", "name": "bench-policy-step"}], "graph": {}}
    )
    admit: list[float] = []
    whole: list[float] = []
    for n in range(count):
        began = time.perf_counter()
        workflow = await engine.trigger(f"p-{policy}", {"n": n})
        admitted = time.perf_counter()
        assert workflow is not None
        await workflow
        await engine.flush()
        admit.append(admitted - began)
        whole.append(time.perf_counter() - began)
    await engine.stop()
    return statistics.median(admit) * 1e6, statistics.median(whole) * 1e6


PARKED: dict[str, asyncio.Event] = {}


@register("bench-policy-park")
async def park(event: Event) -> None:
    PARKED[event.data["node"]].set()
    await asyncio.Event().wait()


async def aborts(new_store: Any, count: int) -> tuple[float, float]:
    template = {
        "id": "abort",
        "policy": "abort-running",
        "tasks": [{"id": "t", "name": "bench-policy-park"}],
        "graph": {},
    }
    a = Engine(store=new_store(), node="a", lease=3.0)
    b = Engine(store=new_store(), node="b", lease=3.0)
    await a.load(template)
    await b.load(template)
    to_end: list[float] = []
    to_start: list[float] = []
    for _ in range(count):
        PARKED["a"], PARKED["b"] = asyncio.Event(), asyncio.Event()
        first = await a.trigger("abort", {"node": "a"})
        assert first is not None
        await PARKED["a"].wait()
        await a.flush()
        began = time.perf_counter()
        second = await b.trigger("abort", {"node": "b"})
        assert second is not None
        await asyncio.gather(first, return_exceptions=True)
        to_end.append(time.perf_counter() - began)
        await PARKED["b"].wait()
        to_start.append(time.perf_counter() - began)
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
        await b.flush()
    await asyncio.gather(a.stop(force=True), b.stop(force=True))
    return statistics.median(to_end) * 1e3, statistics.median(to_start) * 1e3


async def drop(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def main(dsn: str, count: int, aborts_count: int) -> None:
    print(f"{'store':<10} {'policy':<18} {'trigger() us':>13} {'workflow us':>12}")
    for policy in ("start-new", "skip", "skip-until-unlock", "abort-running"):
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        store = PostgresStore(dsn, schema=schema)
        try:
            admit, whole = await measure(store, policy, count)
        finally:
            store.close()
            await drop(dsn, schema)
        print(f"{'postgres':<10} {policy:<18} {admit:>13.0f} {whole:>12.0f}")
        with tempfile.TemporaryDirectory() as tmp, SQLiteStore(Path(tmp) / "b.db") as lite:
            admit, whole = await measure(lite, policy, count)
        print(f"{'sqlite':<10} {policy:<18} {admit:>13.0f} {whole:>12.0f}")
    print(f"\n{'store':<10} {'abort on B -> A ended ms':>25} {'-> B started ms':>16}")
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    made: list[Any] = []

    def pg() -> Any:
        made.append(PostgresStore(dsn, schema=schema))
        return made[-1]

    try:
        ended, started = await aborts(pg, aborts_count)
    finally:
        for store in made:
            store.close()
        await drop(dsn, schema)
    print(f"{'postgres':<10} {ended:>25.1f} {started:>16.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        made.clear()

        def lite() -> Any:
            made.append(SQLiteStore(Path(tmp) / "a.db"))
            return made[-1]

        try:
            ended, started = await aborts(lite, aborts_count)
        finally:
            for store in made:
                store.close()
    print(f"{'sqlite':<10} {ended:>25.1f} {started:>16.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--workflows", type=int, default=500)
    parser.add_argument("--aborts", type=int, default=20)
    args = parser.parse_args()
    logging.getLogger("tukio").setLevel(logging.ERROR)  # every abort logs its cancel
    asyncio.run(main(args.dsn, args.workflows, args.aborts))
