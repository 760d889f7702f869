"""One node of a rolling upgrade: an engine running version 1 or 2 of template "vw" (the versions tests).

    python version_worker.py STORE SIDE NODE VERSION MODE COUNT [WITHOUT]

STORE is ``sqlite:PATH`` or ``postgres:DSN#SCHEMA``. The engine, named NODE
(lease 0.6 s), loads version VERSION of the template: 1 is a -> b -> c, 2 is
the same with b renamed b2 and a new task d after a. Every task name of both
versions is registered, except WITHOUT (a comma-separated list). Each task
appends ``<exec id> <task id> <version of the template it runs> <node>`` to
SIDE. Then, by MODE:

- ``park``: triggers COUNT executions, prints READY once each one's task b
  runs (b never ends here), and waits to be killed;
- ``finish``: recovers, prints ``RECOVERED n``, triggers COUNT executions,
  waits until the store holds no unfinished execution (its heartbeats take
  over what dead nodes left), prints DONE and exits;
- ``stranded``: recovers until `unrecovered` lists something (10 s at most),
  prints ``UNRECOVERED <exec id> <problem>`` for each, runs COUNT executions
  to their end, prints DONE and exits.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from tukio import Engine, Event, TaskRegistry, Workflow, WorkflowTemplate, register
from tukio.store import PostgresStore, SQLiteStore, Store

SIDE = -1
NODE = ""
PARK = False
PARKED: asyncio.Queue[str] | None = None
NAMES = ("vw-a", "vw-b", "vw-b2", "vw-c", "vw-d")


async def step(event: Event) -> dict[str, Any]:
    """Record what runs (which task, on which version and node); park task b when told."""
    workflow = Workflow.current_workflow()
    assert workflow is not None
    tid = asyncio.current_task().template.uid  # type: ignore[union-attr]
    os.write(SIDE, f"{workflow.uid} {tid} {workflow.template.version} {NODE}\n".encode())
    if PARK and tid == "b":
        assert PARKED is not None
        PARKED.put_nowait(workflow.uid)
        await asyncio.Event().wait()
    return {**event.data, tid: NODE}


def version(number: int) -> WorkflowTemplate:
    """Version 1 or 2 of template "vw"."""
    if number == 1:
        tasks, graph = ["a", "b", "c"], {"a": ["b"], "b": ["c"]}
    else:
        tasks, graph = ["a", "b2", "d", "c"], {"a": ["b2", "d"], "b2": ["c"]}
    return WorkflowTemplate.from_dict(
        {"id": "vw", "policy": "start-new", "tasks": [{"id": t, "name": f"vw-{t}"} for t in tasks], "graph": graph}
    )


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def open_store(spec: str) -> Store:
    kind, _, where = spec.partition(":")
    if kind == "sqlite":
        return SQLiteStore(where)
    dsn, _, schema = where.partition("#")
    return PostgresStore(dsn, schema=schema)


async def main(spec: str, number: int, mode: str, count: int) -> None:
    global PARKED
    PARKED = asyncio.Queue()
    with open_store(spec) as store:
        engine = Engine(store=store, node=NODE, lease=0.6)
        await engine.load(version(number))
        if mode == "park":
            for n in range(count):
                await engine.trigger("vw", {"n": n})
            for _ in range(count):
                await asyncio.wait_for(PARKED.get(), 20)
            await engine.flush()
            say("READY")
            await asyncio.Event().wait()
        resumed = await engine.recover()
        if mode == "stranded":
            for _ in range(200):
                if engine.unrecovered:
                    break
                await asyncio.sleep(0.05)
                await engine.recover()
            for info in engine.unrecovered:
                say(f"UNRECOVERED {info.exec_id} {info.problem}")
        else:
            say(f"RECOVERED {len(resumed)}")
        runs = [await engine.trigger("vw", {"n": n}) for n in range(count)]
        await asyncio.wait_for(asyncio.gather(*(w for w in runs if w is not None)), 20)
        if mode == "finish":
            for _ in range(400):  # 20 s at most
                if not await asyncio.to_thread(store.unfinished):
                    break
                await asyncio.sleep(0.05)
        await asyncio.wait_for(engine.stop(), 20)
    say("DONE")


if __name__ == "__main__":
    spec, side, NODE, number, mode, count = sys.argv[1:7]
    without = set(sys.argv[7].split(",")) if len(sys.argv) > 7 else set()
    for name in NAMES:
        if name not in without:
            register(name)(step)
    assert all(TaskRegistry.registered(n) != (n in without) for n in NAMES)
    PARK = mode == "park"
    SIDE = os.open(side, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    asyncio.run(main(spec, int(number), mode, int(count)))
