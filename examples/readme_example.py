"""The example of the original tukio README, unchanged but for the loop setup.

Run it with ``python examples/readme_example.py``; it prints six lines, one
per task, in the order the original README shows.
"""

import asyncio

import tukio
from tukio.task import register


@register("my-task1")
async def task1(event):
    tid = asyncio.current_task().template.uid
    print(f"In task1 ({tid}): {event.data}")
    return {tid: "data from task1"}


@register("my-task2")
async def task2(event):
    tid = asyncio.current_task().template.uid
    print(f"In task2 ({tid}): {event.data}")
    event.data[tid] = "data from task2"
    return event


wf1 = {
    "title": "workflow #1",
    "tasks": [
        {"id": "f1", "name": "my-task2"},
        {"id": "f2", "name": "my-task2"},
        {"id": "f3", "name": "my-task1"},
        {"id": "f4", "name": "my-task1"},
        {"id": "f5", "name": "my-task2"},
        {"id": "f6", "name": "my-task1"},
    ],
    "graph": {
        "f1": ["f2"],
        "f2": ["f3", "f4"],
        "f3": ["f5"],
        "f4": ["f6"],
        "f5": [],
        "f6": [],
    },
}


async def main() -> None:
    wf_tmpl = tukio.WorkflowTemplate.from_dict(wf1)
    engine = tukio.Engine()
    await engine.load(wf_tmpl)
    wflows = await engine.data_received({"initial": "data"})
    # Wait for the end of the workflows triggered
    await asyncio.wait(wflows)


if __name__ == "__main__":
    asyncio.run(main())
