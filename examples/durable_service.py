"""A service that journals its workflows and recovers them when it starts.

Run it: ``python examples/durable_service.py``. It plays two lives of the
same service on one SQLite journal (in a temporary directory):

1. the first life takes an order and dies abruptly (``os._exit``, no
   cleanup) while the order is being charged;
2. the second life starts, recovers the interrupted workflow (the order is
   not taken again, the charge runs again: at least once), finishes it, then
   serves a new order, and lists what the journal holds.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tukio import Engine, Event, WorkflowTemplate, register
from tukio.store import SQLiteStore

TEMPLATE = {
    "id": "order",
    "policy": "start-new",
    "tasks": [
        {"id": "take", "name": "take-order"},
        {
            "id": "charge",
            "name": "charge-card",
            "retry": {"max_attempts": 3, "delay": 0.01, "on": ["ConnectionError"]},
        },
        {"id": "ship", "name": "ship-order"},
    ],
    "graph": {"take": ["charge"], "charge": ["ship"]},
}


@register("take-order")
async def take_order(event: Event) -> dict[str, Any]:
    """Accept the order."""
    print(f"taking order {event.data['order']}")
    return {**event.data, "taken": True}


@register("charge-card")
async def charge_card(event: Event) -> dict[str, Any]:
    """Charge the customer (the first life of the service dies here)."""
    if os.environ.get("CRASH_WHILE_CHARGING"):
        os._exit(70)  # a crash: no cleanup, no flush, nothing
    print(f"charging order {event.data['order']}")
    return {**event.data, "charged": True}


@register("ship-order")
async def ship_order(event: Event) -> dict[str, Any]:
    """Ship it."""
    print(f"shipping order {event.data['order']}")
    return {**event.data, "shipped": True}


async def service(path: str, orders: list[int]) -> None:
    """Start (recovering what a crash interrupted), serve `orders`, stop."""
    with SQLiteStore(path) as store:
        engine = Engine(store=store)
        await engine.load(WorkflowTemplate.from_dict(TEMPLATE))
        recovered = await engine.recover()
        for workflow in recovered:
            print(f"recovered workflow of order {store.load(workflow.uid)['exec']['event']['order']}")
        for order in orders:
            await engine.trigger("order", {"order": order})
        await engine.stop()  # waits for the workflows, then for the journal
        for info in store.executions():
            shipped = store.load(info.exec_id)["tasks"][2]["exec"]["outputs"]
            print(f"journal: order {shipped['order']} {info.state}, shipped={shipped['shipped']}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "orders.db")
        first = subprocess.run(
            [sys.executable, __file__, path, "1"],
            env={**os.environ, "CRASH_WHILE_CHARGING": "1"},
            check=False,
        )
        print(f"first life died (exit code {first.returncode})")
        asyncio.run(service(path, [2]))


if __name__ == "__main__":
    if len(sys.argv) == 3:  # a life of the service: STORE ORDER
        asyncio.run(service(sys.argv[1], [int(sys.argv[2])]))
    else:
        main()
