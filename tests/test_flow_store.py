"""Flow control with a store used by one process: keys across restarts, queued executions cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tukio import Engine, WorkflowTemplate
from tukio.flow import key_exec_id
from tukio.store.base import Store
from tukio.store.memory import MemoryStore
from tukio.store.sqlite import SQLiteStore


def keyed_template(task: str) -> WorkflowTemplate:
    return WorkflowTemplate.from_dict(
        {"id": "stored-keys", "policy": "start-new", "concurrency": 1, "tasks": [{"id": "a", "name": task}]}
    )


@pytest.fixture(params=["memory", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens the store again, as a restarted process would (the same one in memory)."""
    opened: list[Store] = []
    memory = MemoryStore()

    def reopen() -> Store:
        store: Store = memory if request.param == "memory" else SQLiteStore(str(tmp_path / "flow.db"))
        opened.append(store)
        return store

    yield reopen
    for store in opened:
        store.close()


async def test_a_key_deduplicates_across_a_restart(stores: Callable[[], Store], noop: str) -> None:
    first = Engine(store=stores())
    await first.load(keyed_template(noop))
    workflow = await first.trigger("stored-keys", {"n": 1}, key="invoice-7")
    assert workflow is not None
    assert workflow.uid == key_exec_id("stored-keys", "invoice-7")
    await asyncio.wait_for(workflow, 5)
    await asyncio.wait_for(first.stop(), 5)
    store = stores()
    second = Engine(store=store)
    await second.load(keyed_template(noop))
    # Known only from the store: nothing starts again.
    assert await second.trigger("stored-keys", {"n": 2}, key="invoice-7") is None
    fresh = await second.trigger("stored-keys", {"n": 3}, key="invoice-8")
    assert fresh is not None
    await asyncio.wait_for(fresh, 5)
    await asyncio.wait_for(second.stop(), 5)
    finished = {info.exec_id: info.state for info in store.executions(template_id="stored-keys")}
    assert finished == {workflow.uid: "finished", fresh.uid: "finished"}


async def test_a_recovered_execution_is_found_by_its_key(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    store = MemoryStore()
    release = asyncio.Event()

    async def wait(event: Any) -> None:
        await release.wait()

    task = task_name("wait")
    registered(task, wait)
    first = Engine(store=store)
    await first.load(keyed_template(task))
    workflow = await first.trigger("stored-keys", {}, key="resume-me")
    assert workflow is not None
    await first.flush()
    # As a restarted process, while the store holds the execution unfinished.
    second = Engine(store=store)
    await second.load(keyed_template(task))
    await second.recover()
    again = await second.trigger("stored-keys", {}, key="resume-me")
    assert again is not None
    assert again.uid == workflow.uid
    release.set()
    await asyncio.wait_for(again, 5)
    await asyncio.wait_for(second.stop(), 5)
    await asyncio.wait_for(asyncio.gather(first.stop(), workflow), 5)
