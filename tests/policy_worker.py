"""One engine process of the cross-node overrun policy tests (test_cluster_policies.py).

    python policy_worker.py STORE NODE POLICY LEASE

STORE is an SQLite file, or ``postgresql://...#schema``. The engine loads
template "mp" (one task, under POLICY) and prints READY; on the line ``go``
(stdin) it triggers it and prints STARTED or SKIPPED. The task prints
``RUNNING`` when it starts and waits for the line ``end``; a workflow
cancelled meanwhile prints CANCELLED. On ``end`` the engine stops and the
process exits.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import Any

from tukio import Engine, Event, register
from tukio.store import PostgresStore, SQLiteStore

END = asyncio.Event()


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@register("mp-park")
async def park(event: Event) -> None:
    say("RUNNING")
    await END.wait()


async def main(spec: str, node: str, policy: str, lease: float) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"{node} %(levelname)s %(name)s %(message)s")
    if spec.startswith("postgresql://"):
        dsn, _, schema = spec.partition("#")
        store: Any = PostgresStore(dsn, schema=schema)
    else:
        store = SQLiteStore(spec)
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:  # stdin, line by line, onto the loop
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())

    threading.Thread(target=read, daemon=True).start()
    with store:
        engine = Engine(store=store, node=node, lease=lease)
        await engine.load({"id": "mp", "policy": policy, "tasks": [{"id": "t", "name": "mp-park"}], "graph": {}})
        say("READY")
        assert await lines.get() == "go"
        workflow = await engine.trigger("mp", {})
        say("SKIPPED" if workflow is None else "STARTED")
        if workflow is not None:
            workflow.add_done_callback(lambda w: say("CANCELLED") if w.cancelled() else None)
        assert await lines.get() == "end"
        END.set()
        if workflow is not None:
            await asyncio.gather(workflow, return_exceptions=True)
        await engine.stop()


if __name__ == "__main__":
    spec, node, policy, lease = sys.argv[1:5]
    asyncio.run(main(spec, node, policy, float(lease)))
