"""One engine process of the multi-process cluster tests (and benchmarks).

    python cluster_worker.py DSN SCHEMA NODE LEASE COUNT DELAY [STEPS]

Runs an engine named NODE on the PostgresStore (DSN, SCHEMA), resumes what
it may (`recover`), starts COUNT workflows of a chain of STEPS tasks (3 by
default), prints READY, and runs until killed. Each task inserts
``(exec_id, task_id, node, clock_timestamp())`` into SCHEMA.starts when it
starts, then sleeps DELAY seconds: the tests read who ran what, and when.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
from typing import Any

import asyncpg

from tukio import Engine, Event, Workflow, register
from tukio.store.postgres import PostgresStore

POOL: Any = None
NODE = ""
DELAY = 0.0
SCHEMA = ""


@register("mp-step")
async def step(event: Event) -> dict[str, Any]:
    """Record the start, wait DELAY, pass the data on with own id added."""
    workflow = Workflow.current_workflow()
    task = asyncio.current_task()
    assert workflow is not None
    tid = task.template.uid  # type: ignore[union-attr]
    delay = 0.05
    while True:  # the database may be restarting: try again
        try:
            await POOL.execute(
                f'INSERT INTO "{SCHEMA}".starts VALUES ($1, $2, $3, clock_timestamp())', workflow.uid, tid, NODE
            )
            break
        except (
            OSError,
            asyncpg.PostgresConnectionError,
            asyncpg.OperatorInterventionError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
        ):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
    if DELAY:
        await asyncio.sleep(DELAY)
    return {**event.data, tid: NODE}


def chain(steps: int) -> dict[str, Any]:
    ids = [f"t{i}" for i in range(steps)]
    return {
        "id": "mp",
        "policy": "start-new",
        "tasks": [{"id": tid, "name": "mp-step"} for tid in ids],
        "graph": {a: [b] for a, b in itertools.pairwise(ids)},
    }


async def main(dsn: str, schema: str, node: str, lease: float, count: int, delay: float, steps: int) -> None:
    global POOL, NODE, DELAY, SCHEMA
    NODE, DELAY, SCHEMA = node, delay, schema
    logging.basicConfig(level=logging.WARNING, format=f"{node} %(levelname)s %(name)s %(message)s")
    POOL = await asyncpg.create_pool(dsn, min_size=2, max_size=8)
    store = await asyncio.to_thread(PostgresStore, dsn, schema=schema)
    engine = Engine(store=store, node=node, lease=lease)
    await engine.load(chain(steps))
    await engine.recover()
    for n in range(count):
        await engine.trigger("mp", {"n": n})
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    dsn, schema, node, lease, count, delay = sys.argv[1:7]
    steps = int(sys.argv[7]) if len(sys.argv) > 7 else 3
    asyncio.run(main(dsn, schema, node, float(lease), int(count), float(delay), steps))
