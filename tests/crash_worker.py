"""The process the crash test kills: runs workflows on a SQLiteStore, or recovers them.

    python crash_worker.py run STORE SIDE_FILE COUNT   # start COUNT workflows, print READY, wait
    python crash_worker.py recover STORE SIDE_FILE     # recover and finish what is unfinished

Every task appends ``<exec id> <task id>`` to SIDE_FILE when it starts, so
the test can count how often each task ran.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from typing import Any

from tukio import Engine, Event, Workflow, WorkflowTemplate, register
from tukio.store import SQLiteStore

SIDE: int = -1

TEMPLATE = {
    "id": "crash",
    "tasks": [
        {"id": "r", "name": "crash-step"},
        {"id": "x", "name": "crash-step"},
        {"id": "x2", "name": "crash-step"},
        {"id": "y", "name": "crash-step"},
        {"id": "j", "name": "join", "config": {"wait_for": ["x2", "y"]}},
        {"id": "z", "name": "crash-final"},
    ],
    "graph": {"r": ["x", "y"], "x": ["x2"], "x2": ["j"], "y": ["j"], "j": ["z"]},
}


def expected(n: int) -> dict[str, Any]:
    """The outputs of task z for a workflow triggered with ``{'n': n}``."""
    return {"n": n, "keys": ["n", "r", "x", "x2", "y"]}


def _ran(tid: str) -> None:
    workflow = Workflow.current_workflow()
    assert workflow is not None
    os.write(SIDE, f"{workflow.uid} {tid}\n".encode())


@register("crash-step")
async def step(event: Event) -> dict[str, Any]:
    """Note the start, take a few milliseconds, add own id to the data."""
    tid = asyncio.current_task().template.uid  # type: ignore[union-attr]
    _ran(tid)
    await asyncio.sleep(random.uniform(0.0005, 0.004))
    return {**event.data, tid: event.data["n"]}


@register("crash-final")
async def final(event: Event) -> dict[str, Any]:
    """Summarise what the join gathered (independent of arrival order)."""
    _ran("z")
    keys: set[str] = set()
    for data in event.data["data_stash"]:
        keys.update(data)
    return {"n": event.data["n"], "keys": sorted(keys)}


async def run(path: str, count: int) -> None:
    with SQLiteStore(path) as store:
        engine = Engine(store=store)
        template = await engine.load(WorkflowTemplate.from_dict(TEMPLATE))
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        workflows = [await engine.run_once(template, {"n": n}) for n in range(count)]
        await asyncio.gather(*(w for w in workflows if w is not None))
        await engine.stop()
    sys.stdout.write("DONE\n")


async def recover(path: str) -> None:
    with SQLiteStore(path) as store:
        engine = Engine(store=store)
        await engine.load(WorkflowTemplate.from_dict(TEMPLATE))
        workflows = await engine.recover()
        await asyncio.gather(*workflows)
        await engine.stop()
        assert not engine.unrecovered
    sys.stdout.write(f"RECOVERED {len(workflows)}\n")


if __name__ == "__main__":
    mode, store_path, side_path = sys.argv[1:4]
    SIDE = os.open(side_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        if mode == "run":
            asyncio.run(run(store_path, int(sys.argv[4])))
        else:
            asyncio.run(recover(store_path))
    finally:
        os.close(SIDE)
