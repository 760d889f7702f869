"""One engine process of the flow-control fault tests (test_flow_processes.py).

    python flow_worker.py STORE NODE LEASE

STORE is an SQLite file, or ``postgresql://...#schema``. The engine loads
template "fq" (``"concurrency": 2``, one task), triggers it twice, and
prints HOLDING once both bodies run. The bodies never end here: the
process waits to be killed or paused.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from tukio import Engine, Event, register
from tukio.store import PostgresStore, SQLiteStore

TEMPLATE = {
    "id": "fq",
    "policy": "start-new",
    "concurrency": 2,
    "tasks": [{"id": "t1", "name": "fq-body"}],
    "graph": {"t1": []},
}
STARTED: list[str] = []
BOTH = asyncio.Event()


@register("fq-body")
async def body(event: Event) -> None:
    STARTED.append("x")
    if len(STARTED) == 2:
        BOTH.set()
    await asyncio.Event().wait()


def open_store(spec: str) -> Any:
    """The store a spec names (an SQLite file, or ``postgresql://...#schema``)."""
    if spec.startswith("postgresql://"):
        dsn, _, schema = spec.partition("#")
        return PostgresStore(dsn, schema=schema)
    return SQLiteStore(spec)


async def main(spec: str, node: str, lease: float) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"{node} %(levelname)s %(name)s %(message)s")
    engine = Engine(store=open_store(spec), node=node, lease=lease)
    await engine.load(TEMPLATE)
    for n in range(2):
        await engine.trigger("fq", {"n": n})
    await asyncio.wait_for(BOTH.wait(), 30)
    sys.stdout.write("HOLDING\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
