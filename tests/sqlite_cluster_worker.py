"""One engine process sharing an SQLite journal with others (the SQLite cluster tests).

    python sqlite_cluster_worker.py DB SIDE NODE LEASE COUNT DELAY [STEPS]

Runs an engine named NODE on ``SQLiteStore(DB)`` with that LEASE, resumes
what it may (`recover`), prints ``RECOVERED n``, then:

- COUNT >= 0: starts COUNT workflows of a chain of STEPS tasks (3 by
  default), prints READY, and runs until killed;
- COUNT < 0: waits for the workflows it resumed, stops the engine and exits.

Each task appends ``<exec id> <task id> <node>`` to SIDE when it starts,
then sleeps DELAY seconds: the tests read who ran what.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
from typing import Any

from tukio import Engine, Event, Workflow, register
from tukio.store import SQLiteStore

SIDE = -1
NODE = ""
DELAY = 0.0


@register("sq-step")
async def step(event: Event) -> dict[str, Any]:
    """Record the start, wait DELAY, pass the data on with own id added."""
    workflow = Workflow.current_workflow()
    task = asyncio.current_task()
    assert workflow is not None
    tid = task.template.uid  # type: ignore[union-attr]
    os.write(SIDE, f"{workflow.uid} {tid} {NODE}\n".encode())
    if DELAY:
        await asyncio.sleep(DELAY)
    return {**event.data, tid: NODE}


def chain(steps: int) -> dict[str, Any]:
    ids = [f"t{i}" for i in range(steps)]
    return {
        "id": "sq",
        "policy": "start-new",
        "tasks": [{"id": tid, "name": "sq-step"} for tid in ids],
        "graph": {a: [b] for a, b in itertools.pairwise(ids)},
    }


async def main(db: str, node: str, lease: float, count: int, steps: int) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"{node} %(levelname)s %(name)s %(message)s")
    with SQLiteStore(db) as store:
        engine = Engine(store=store, node=node, lease=lease)
        await engine.load(chain(steps))
        resumed = await engine.recover()
        sys.stdout.write(f"RECOVERED {len(resumed)}\n")
        sys.stdout.flush()
        if count < 0:
            await asyncio.gather(*resumed)
            await engine.stop()
            return
        for n in range(count):
            await engine.trigger("sq", {"n": n})
        await engine.flush()
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        await asyncio.Event().wait()


if __name__ == "__main__":
    db, side, NODE, lease, count, delay = sys.argv[1:7]
    DELAY = float(delay)
    SIDE = os.open(side, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        asyncio.run(main(db, NODE, float(lease), int(count), int(sys.argv[7]) if len(sys.argv) > 7 else 3))
    finally:
        os.close(SIDE)
