"""The process the durable-trigger test kills: it SIGKILLs itself right after `trigger()` returned.

    python trigger_worker.py sqlite PATH POLICY SEED
    python trigger_worker.py postgres DSN#SCHEMA POLICY SEED

It triggers template "killed-SEED" (one task that parks; a template of its
own, which no execution of an earlier, killed, run holds locked) a seeded number of times
one after the other, then a seeded number of times at once; it prints
``<exec id> <i>`` for each workflow `trigger()` returned (``{"i": i}`` was its
data) and kills itself as soon as the first of the concurrent triggers
returns, with the others' commits possibly in flight.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from typing import Any

from tukio import Engine, Workflow, WorkflowTemplate, register


@register("killed-park")
async def park(event: Any) -> None:
    """Unlock the workflow (skip-until-unlock), then never end."""
    workflow = Workflow.current_workflow()
    assert workflow is not None
    workflow.unlock_when_task_done()
    await asyncio.Event().wait()


def _store(kind: str, where: str) -> Any:
    if kind == "postgres":
        from tukio.store.postgres import PostgresStore

        dsn, schema = where.split("#")
        return PostgresStore(dsn, schema=schema)
    from tukio.store import SQLiteStore

    return SQLiteStore(where)


def _said(workflow: Workflow | None, i: int) -> None:
    if workflow is not None:
        os.write(1, f"{workflow.uid} {i}\n".encode())


async def main(kind: str, where: str, policy: str, seed: int) -> None:
    rng = random.Random(seed)
    engine = Engine(store=_store(kind, where))
    tid = f"killed-{seed}"
    await engine.load(
        WorkflowTemplate.from_dict({"id": tid, "policy": policy, "tasks": [{"id": "a", "name": "killed-park"}]})
    )
    i = 0
    for _ in range(rng.randint(0, 3)):
        _said(await engine.trigger(tid, {"i": i}), i)
        i += 1

    async def one(i: int) -> None:
        workflow = await engine.trigger(tid, {"i": i})
        _said(workflow, i)
        if workflow is not None:
            os.kill(os.getpid(), signal.SIGKILL)

    await asyncio.gather(*(one(i + k) for k in range(rng.randint(1, 50))))
    os.kill(os.getpid(), signal.SIGKILL)  # every trigger skipped


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
