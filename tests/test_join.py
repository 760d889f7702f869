"""JoinTask ('join'): waiting for several parents and merging their data."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from support import template, until

from tukio import Event, JoinTask, TaskRegistry, Workflow

GATES: dict[str, asyncio.Event] = {}


@pytest.fixture
def parents(registered: Callable[..., Any]) -> dict[str, str]:
    GATES.clear()
    gates = GATES

    async def tag(event: Event) -> dict[str, Any]:
        tid = asyncio.current_task().template.uid  # type: ignore[union-attr]
        return {"from": tid}

    async def held(event: Event) -> dict[str, Any]:
        tid = asyncio.current_task().template.uid  # type: ignore[union-attr]
        await gates.setdefault(tid, asyncio.Event()).wait()
        return {"from": tid}

    registered("join-tag", tag)
    registered("join-held", held)
    return {"tag": "join-tag", "held": "join-held"}


def fan_in(parent_name: str, join_config: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
    extra: dict[str, Any] = {"config": join_config or {}}
    if timeout is not None:
        extra["timeout"] = timeout
    return template(
        [("r", "join-tag"), ("p1", parent_name), ("p2", parent_name), ("p3", parent_name), ("j", "join", extra)],
        {"r": ["p1", "p2", "p3"], "p1": ["j"], "p2": ["j"], "p3": ["j"]},
    )


async def test_join_is_registered() -> None:
    klass, _ = TaskRegistry.get("join")
    assert klass is JoinTask


async def test_join_waits_for_every_parent_by_default(parents: dict[str, str]) -> None:
    wf = Workflow(fan_in(parents["tag"]))
    wf.run({})
    await wf
    out = wf.tasks_by_id["j"].outputs
    assert sorted(d["from"] for d in out["data_stash"]) == ["p1", "p2", "p3"]
    # The first parent's data is the base of the output.
    assert out["from"] == out["data_stash"][0]["from"]
    assert len([t for t in wf.tasks if t.template.uid == "j"]) == 1  # type: ignore[union-attr]


async def test_join_wait_for_ids(parents: dict[str, str]) -> None:
    wf = Workflow(fan_in(parents["tag"], {"wait_for": ["p2", "p3"]}))
    wf.run({})
    await wf
    stash = wf.tasks_by_id["j"].outputs["data_stash"]
    assert sorted(d["from"] for d in stash) == ["p2", "p3"]


async def test_join_wait_for_count(parents: dict[str, str]) -> None:
    wf = Workflow(fan_in(parents["tag"], {"wait_for": 2}))
    wf.run({})
    await wf
    assert len(wf.tasks_by_id["j"].outputs["data_stash"]) == 2


async def test_join_timeout_returns_what_it_gathered(parents: dict[str, str], registered: Callable[..., Any]) -> None:
    async def never(event: Event) -> None:
        await asyncio.Event().wait()

    registered("join-never", never)
    tmpl = template(
        [
            ("r", "join-tag"),
            ("p1", "join-tag"),
            ("p2", "join-never"),
            ("j", "join", {"timeout": 0.02}),
            ("after", "join-tag"),
        ],
        {"r": ["p1", "p2"], "p1": ["j"], "p2": ["j"], "j": ["after"]},
    )
    wf = Workflow(tmpl)
    wf.run({})
    await until(lambda: "p2" in wf.tasks_by_id and "j" in wf.tasks_by_id)
    with pytest.raises(asyncio.CancelledError):
        await wf.tasks_by_id["j"]
    assert wf.tasks_by_id["j"].timed_out
    assert wf.tasks_by_id["j"].outputs == {"from": "p1", "data_stash": [{"from": "p1"}]}
    wf.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wf
    # The timed-out join's outputs flowed to its successor.
    assert wf.tasks_by_id["after"].inputs == {"from": "p1", "data_stash": [{"from": "p1"}]}


async def test_join_bad_wait_for_is_a_task_creation_error(parents: dict[str, str]) -> None:
    wf = Workflow(fan_in(parents["tag"], {"wait_for": "p1"}))
    wf.run({})
    await wf
    j = next(t for t in wf.report()["tasks"] if t["id"] == "j")["exec"]
    assert j["state"] == "exception"
    assert "wait_for must be a positive count or a list of task ids" in j["error"]


async def test_join_report_shows_what_it_waits_for(parents: dict[str, str]) -> None:
    for tid in ("p1", "p2", "p3"):
        GATES[tid] = asyncio.Event()
    wf = Workflow(fan_in(parents["held"], {"wait_for": ["p1", "p2", "p3"]}))
    wf.run({})
    GATES["p1"].set()
    await until(lambda: "j" in wf.tasks_by_id)
    for _ in range(3):
        await asyncio.sleep(0)
    j = next(t for t in wf.report()["tasks"] if t["id"] == "j")["exec"]
    assert j["state"] == "pending"
    assert j["reporting"]["status"] == "running"
    assert [t["id"] for t in j["reporting"]["tasks"]] == ["p1"]
    GATES["p2"].set()
    GATES["p3"].set()
    await wf
    assert len(wf.tasks_by_id["j"].outputs["data_stash"]) == 3
    j = next(t for t in wf.report()["tasks"] if t["id"] == "j")["exec"]
    assert j["reporting"]["status"] == "done"
    assert [t["id"] for t in j["reporting"]["tasks"]] == ["p1", "p2", "p3"]
