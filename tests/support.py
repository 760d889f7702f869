"""Helpers shared by the workflow and engine tests."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from tukio import Engine, Event, WorkflowTemplate, get_broker


def template(
    tasks: list[tuple[str, str] | tuple[str, str, dict[str, Any]]],
    graph: dict[str, list[str]],
    **fields: Any,
) -> WorkflowTemplate:
    """Build a template from ``(id, name[, extra task fields])`` tuples."""
    task_dicts = []
    for item in tasks:
        extra = item[2] if len(item) == 3 else {}  # type: ignore[misc]
        task_dicts.append({"id": item[0], "name": item[1], **extra})
    return WorkflowTemplate.from_dict({"tasks": task_dicts, "graph": graph, **fields})


def chain(template_id: str, *names: str) -> WorkflowTemplate:
    """A template `template_id` running the tasks `names` one after the other (ids t1, t2...)."""
    ids = [f"t{i}" for i in range(1, len(names) + 1)]
    graph = {a: [b] for a, b in itertools.pairwise(ids)}
    return template([(i, n) for i, n in zip(ids, names, strict=True)], graph, id=template_id)


async def run_to_end(engine: Engine, template: WorkflowTemplate, n: int = 1) -> str:
    """Run `template` to its end on `engine` with ``{"n": n}``, its journal flushed; return the execution id."""
    workflow = await engine.run_once(template, {"n": n})
    assert workflow is not None
    await asyncio.wait_for(asyncio.wait([workflow]), 10)
    await engine.flush()
    return workflow.uid


class Recorder:
    """Collects every execution event the broker dispatches, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.broker = get_broker()
        self.broker.register(self, None)

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        self.broker.unregister(self, None)

    def types(self, task_id: str | None = None) -> list[str]:
        """Event types, optionally only those of one task template id."""
        return [
            e.data["type"]
            for e in self.events
            if "type" in e.data and (task_id is None or (e.source is not None and e.source.task_template_id == task_id))
        ]


async def settle() -> None:
    """Let already-scheduled callbacks run (a few loop iterations, no timers)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def until(predicate: Callable[[], object], steps: int = 10_000) -> None:
    """Yield to the loop until `predicate()` is true; fail instead of hanging.

    For conditions that no event announces (a task object created by the
    workflow, say); bounded in loop iterations, not in time.
    """
    for _ in range(steps):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"condition never became true: {predicate}")
