"""One engine process whose task waits for events (the cross-process event tests).

    python events_worker.py DB NODE

Runs an engine named NODE on ``SQLiteStore(DB)``, starts the workflow "ev"
(one task listening on topic "news"), prints READY once the task listens,
then ``GOT n`` for each event the task gets, and runs until killed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from tukio import Engine, Event, register
from tukio.store import SQLiteStore

#: The template the tests use too.
TEMPLATE: dict[str, Any] = {
    "id": "ev",
    "topics": [],
    "tasks": [{"id": "w", "name": "ev-wait", "topics": ["news"]}],
    "graph": {},
}


async def wait_for_events(event: Event) -> dict[str, Any]:
    """Print READY, then GOT n for each event, until 3 came."""
    queue = asyncio.current_task().queue  # type: ignore[union-attr]
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    got = []
    while len(got) < 3:
        seen = await queue.get()
        got.append(seen.data["n"])
        sys.stdout.write(f"GOT {got[-1]}\n")
        sys.stdout.flush()
    return {"got": got}


async def main(db: str, node: str) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"{node} %(levelname)s %(name)s %(message)s")
    register("ev-wait")(wait_for_events)  # here, not on import: the tests import TEMPLATE
    with SQLiteStore(db, event_poll=0.02) as store:
        engine = Engine(store=store, node=node, lease=30)
        await engine.load(TEMPLATE)
        await engine.trigger("ev", {})
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
