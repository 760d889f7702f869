"""The cost of an overrun policy decided across nodes (one engine on a shared store).

For each store (the local PostgreSQL, in a schema of its own dropped at the
end, and an SQLite file in a temporary directory) and each policy, it runs N
one-step workflows one after the other (trigger, wait for the end, flush)
and reports the median time of `trigger()` (the admission: under 'skip' one
transaction under the template's lock; under 'start-new' nothing is asked)
and of the whole workflow.

    python benchmarks/cluster_policies.py [--dsn DSN] [--workflows 500]
"""

from __future__ import annotations

import argparse
import asyncio
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


async def drop(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def main(dsn: str, count: int) -> None:
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--workflows", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.dsn, args.workflows))
