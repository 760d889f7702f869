"""An event-driven workflow: an order waits for an approval sent later.

The 'await-approval' task listens to the 'approval' topic (``"topics"`` in its
template). While it waits, the service receives the approval from elsewhere
and hands it to the engine with ``engine.data_received(data, topic=...)``;
the broker delivers it to the running task's queue and the workflow goes on.

Run it with ``python examples/approval.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import tukio
from tukio import Event, TaskHolder, Workflow, register


@register("receive-order")
async def receive_order(event: Event) -> dict[str, Any]:
    """Accept an order and give it an id."""
    order = {**event.data, "order_id": 42}
    print(f"order received: {order}")
    return order


@register("await-approval", "wait")
class AwaitApproval(TaskHolder):
    """Wait until an approval for this order arrives on the 'approval' topic."""

    async def wait(self, event: Event) -> dict[str, Any]:
        order = event.data
        # The workflow's other tasks may start once this one is done waiting.
        Workflow.current_workflow().unlock_when_task_done()  # type: ignore[union-attr]
        print(f"waiting for approval of order {order['order_id']}...")
        while True:
            approval: Event = await self.queue.get()  # type: ignore[union-attr]
            if approval.data.get("order_id") == order["order_id"]:
                print(f"approved by {approval.data['by']}")
                return {**order, "approved_by": approval.data["by"]}

    def teardown(self) -> dict[str, Any]:
        # Reached on timeout: the order goes on, flagged as not approved.
        return {"approved_by": None}


@register("ship")
async def ship(event: Event) -> dict[str, Any]:
    """Ship an approved order."""
    print(f"shipping order {event.data['order_id']} approved by {event.data['approved_by']}")
    return {"shipped": True}


ORDER_WORKFLOW = {
    "id": "order",
    "title": "order with approval",
    "topics": ["orders"],
    "tasks": [
        {"id": "receive", "name": "receive-order"},
        {"id": "approve", "name": "await-approval", "topics": ["approval"], "timeout": 10},
        {"id": "ship", "name": "ship"},
    ],
    "graph": {"receive": ["approve"], "approve": ["ship"], "ship": []},
}


async def main() -> None:
    engine = tukio.Engine()
    await engine.load(tukio.WorkflowTemplate.from_dict(ORDER_WORKFLOW))

    # Wait until the approval task runs before sending the approval: watch the
    # execution events of the broker instead of sleeping.
    approval_waiting = asyncio.Event()

    def on_exec(event: Event) -> None:
        source = event.source
        if event.data.get("type") == "task-begin" and source is not None and source.task_template_id == "approve":
            approval_waiting.set()

    tukio.get_broker().register(on_exec, tukio.EXEC_TOPIC)

    (workflow,) = await engine.data_received({"item": "book"}, topic="orders") or []
    await approval_waiting.wait()
    await engine.data_received({"order_id": 42, "by": "alice"}, topic="approval")
    await workflow
    print("final state:", {t["id"]: t["exec"]["state"] for t in workflow.report()["tasks"]})
    await engine.stop()


if __name__ == "__main__":
    asyncio.run(main())
