"""One engine process whose task waits for events (the cross-process event tests).

    python events_worker.py DB NODE [LEASE [COUNT]]

Runs an engine named NODE on ``SQLiteStore(DB)`` (DB ``pg:SCHEMA``: on
PostgreSQL at TUKIO_TEST_POSTGRES, in SCHEMA), with a lease of LEASE seconds
(30 by default), starts the workflow "ev" (one task listening on topic
"news"), prints READY once the task listens, then ``GOT n`` for each event
the task gets (until COUNT came, 3 by default), and runs until killed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from tukio import Engine, Event, register
from tukio.store import SQLiteStore, Store

#: How many events the task waits for.
COUNT = int(sys.argv[4]) if __name__ == "__main__" and len(sys.argv) > 4 else 3
#: The template the tests use too.
TEMPLATE: dict[str, Any] = {
    "id": "ev",
    "topics": [],
    "tasks": [{"id": "w", "name": "ev-wait", "topics": ["news"]}],
    "graph": {},
}


async def wait_for_events(event: Event) -> dict[str, Any]:
    """Print READY, then GOT n for each event, until COUNT came."""
    queue = asyncio.current_task().queue  # type: ignore[union-attr]
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    got = []
    while len(got) < COUNT:
        seen = await queue.get()
        got.append(seen.data["n"])
        sys.stdout.write(f"GOT {got[-1]}\n")
        sys.stdout.flush()
    return {"got": got}


def open_store(db: str) -> Store:
    """The store `db` names: a SQLite file, or ``pg:SCHEMA``."""
    if not db.startswith("pg:"):
        return SQLiteStore(db, event_poll=0.02)
    from pg import DSN

    from tukio.store.postgres import PostgresStore

    return PostgresStore(DSN, schema=db[3:])


async def main(db: str, node: str, lease: float) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"{node} %(levelname)s %(name)s %(message)s")
    register("ev-wait")(wait_for_events)  # here, not on import: the tests import TEMPLATE
    with open_store(db) as store:
        engine = Engine(store=store, node=node, lease=lease)
        await engine.load(TEMPLATE)
        await engine.trigger("ev", {})
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 30.0))
