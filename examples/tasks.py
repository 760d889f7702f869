"""Tasks of a small web-shop order pipeline, for the ``tukio`` command line.

Try them with the workflow next to this file::

    tukio show examples/tasks.py
    tukio validate --modules examples/tasks.py examples/workflow.json
    tukio run examples/tasks.py examples/workflow.json --data '{"order_id": 7, "items": ["book", "lamp"]}'
    tukio run examples/tasks.py examples/workflow.json --dry-run

The card limit is 100: an order of a book (12) and a lamp (35) goes through;
add a bike (250) and the card is declined. A pen is not in stock at the
Paris warehouse: the stock check fails, the join gives up after its 1 s
timeout and nothing is charged. Orders without an ``email`` skip the receipt.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tukio import Event, SkipTask, TaskHolder, register

PRICES = {"book": 12, "lamp": 35, "bike": 250, "pen": 2}
STOCK = {"paris": {"book", "lamp", "bike"}, "lyon": {"book", "pen"}}


def _data(event: Any) -> dict[str, Any]:
    return dict(event.data) if isinstance(event, Event) else dict(event or {})


@register("load-order")
async def load_order(event: Any) -> dict[str, Any]:
    """Read the order from the data the workflow started with."""
    data = _data(event)
    await asyncio.sleep(0.01)
    return {"order_id": data.get("order_id", 0), "items": list(data.get("items", [])), "email": data.get("email")}


@register("check-stock", "check")
class StockCheck(TaskHolder):
    """Check that the configured warehouse holds every item of the order.

    Config: ``warehouse`` (a key of STOCK).
    """

    async def check(self, event: Any) -> dict[str, Any]:
        """Fail when an item is missing from the warehouse."""
        data = _data(event)
        warehouse = self.config.get("warehouse", "paris")
        await asyncio.sleep(0.03)
        missing = [item for item in data["items"] if item not in STOCK[warehouse]]
        if missing:
            raise LookupError(f"not in stock at {warehouse}: {', '.join(missing)}")
        return {**data, "warehouse": warehouse}


@register("price-order")
async def price_order(event: Any) -> dict[str, Any]:
    """Add up the price of the items."""
    data = _data(event)
    await asyncio.sleep(0.02)
    return {**data, "total": sum(PRICES[item] for item in data["items"])}


@register("charge-card", "charge")
class CardCharge(TaskHolder):
    """Charge the customer's card, up to the configured limit."""

    async def charge(self, event: Any) -> dict[str, Any]:
        """Decline totals above the limit."""
        data = _data(event)
        merged: dict[str, Any] = {}
        for parent in data.get("data_stash", [data]):
            merged.update(parent)
        await asyncio.sleep(0.04)
        if "warehouse" not in merged:
            raise RuntimeError("stock not confirmed, nothing charged")
        if merged["total"] > self.config.get("limit", 100):
            raise ValueError(f"card declined: {merged['total']} is over the limit")
        return {"order_id": merged["order_id"], "paid": merged["total"], "email": merged.get("email")}


@register("send-receipt")
async def send_receipt(event: Any) -> dict[str, Any]:
    """E-mail a receipt; skipped when the order has no e-mail address."""
    data = _data(event)
    if not data.get("email"):
        raise SkipTask("no e-mail address")
    await asyncio.sleep(0.01)
    return {**data, "receipt": f"sent to {data['email']}"}


@register("ship-parcel")
async def ship_parcel(event: Any) -> dict[str, Any]:
    """Hand the parcel to the carrier."""
    data = _data(event)
    await asyncio.sleep(0.02)
    return {**data, "tracking": f"TRK-{data.get('order_id', 0):05d}"}
