"""JoinTask ('join'): waiting for several parents and merging their data."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from support import Recorder, template, until

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

    async def never(event: Event) -> None:
        await asyncio.Event().wait()

    registered("join-tag", tag)
    registered("join-held", held)
    registered("join-never", never)
    return {"tag": "join-tag", "held": "join-held", "never": "join-never"}


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


async def test_join_timeout_returns_what_it_gathered(parents: dict[str, str]) -> None:
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


def wide_fan_in(n: int, parent_name: str, join_config: dict[str, Any] | None = None) -> Any:
    ids = [f"p{i}" for i in range(1, n + 1)]
    return template(
        [("r", "join-tag"), *[(i, parent_name) for i in ids], ("j", "join", {"config": join_config or {}})],
        {"r": ids, **{i: ["j"] for i in ids}},
    )


def join_progress(recorder: Recorder) -> list[tuple[str, list[str]]]:
    return [
        (e.data["content"]["status"], [t["id"] for t in e.data["content"]["tasks"]])
        for e in recorder.events
        if e.data.get("type") == "task-progress" and e.source is not None and e.source.task_template_id == "j"
    ]


async def test_join_takes_many_arrivals_of_one_turn(parents: dict[str, str]) -> None:
    # Every parent ends in the same loop turn: the join takes them in one batch.
    wf = Workflow(wide_fan_in(50, parents["tag"]))
    wf.run({})
    await wf
    j = wf.tasks_by_id["j"]
    stash = j.outputs["data_stash"]
    report = j.holder.report()  # type: ignore[attr-defined]
    assert sorted(d["from"] for d in stash) == sorted(f"p{i}" for i in range(1, 51))
    # The stash and the report are both in arrival order.
    assert [t["id"] for t in report["tasks"]] == [d["from"] for d in stash]
    assert report["status"] == "done"
    assert len([t for t in wf.tasks if t.template.uid == "j"]) == 1  # type: ignore[union-attr]


async def test_join_stops_at_its_count_within_a_batch(parents: dict[str, str]) -> None:
    # Three arrivals in one turn, two awaited: the third is neither stashed nor reported.
    wf = Workflow(wide_fan_in(3, parents["tag"], {"wait_for": 2}))
    wf.run({})
    await wf
    j = wf.tasks_by_id["j"]
    assert [d["from"] for d in j.outputs["data_stash"]] == ["p1", "p2"]
    assert [t["id"] for t in j.holder.report()["tasks"]] == ["p1", "p2"]  # type: ignore[attr-defined]


async def test_join_batch_skips_parents_it_does_not_wait_for(parents: dict[str, str]) -> None:
    # p1 starts the join; p2..p4 queue in the same turn; only p1 and p4 are awaited.
    wf = Workflow(wide_fan_in(4, parents["tag"], {"wait_for": ["p1", "p4"]}))
    wf.run({})
    await wf
    j = wf.tasks_by_id["j"]
    assert [d["from"] for d in j.outputs["data_stash"]] == ["p1", "p4"]
    # Parents it does not wait for are still reported as arrivals, as the original did.
    assert [t["id"] for t in j.holder.report()["tasks"]] == ["p1", "p2", "p3", "p4"]  # type: ignore[attr-defined]


async def test_join_takes_arrivals_across_turns_with_progress(parents: dict[str, str]) -> None:
    ids = ["p1", "p2", "p3", "p4"]
    for tid in ids:
        GATES[tid] = asyncio.Event()
    recorder = Recorder()
    try:
        wf = Workflow(wide_fan_in(4, parents["held"]))
        wf.run({})
        GATES["p3"].set()
        await until(lambda: "j" in wf.tasks_by_id)
        await until(lambda: len(wf.tasks_by_id["j"].holder.report()["tasks"]) == 1)  # type: ignore[attr-defined]
        # Two parents released together end in one turn, then a last one alone.
        GATES["p1"].set()
        GATES["p4"].set()
        await until(lambda: len(wf.tasks_by_id["j"].holder.report()["tasks"]) == 3)  # type: ignore[attr-defined]
        assert not wf.tasks_by_id["j"].done()
        GATES["p2"].set()
        await asyncio.wait_for(wf, 5)
        await asyncio.sleep(0)
    finally:
        recorder.close()
    j = wf.tasks_by_id["j"]
    assert [d["from"] for d in j.outputs["data_stash"]] == ["p3", "p1", "p4", "p2"]
    # A snapshot at each arrival, even those taken in one batch, then one at the end.
    assert join_progress(recorder) == [
        ("running", ["p3"]),
        ("running", ["p3", "p1"]),
        ("running", ["p3", "p1", "p4"]),
        ("running", ["p3", "p1", "p4", "p2"]),
        ("done", ["p3", "p1", "p4", "p2"]),
    ]


async def test_join_builds_no_snapshot_when_nobody_listens(
    parents: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[int] = []
    real = JoinTask.report

    def counted(self: JoinTask) -> Any:
        built.append(1)
        return real(self)

    monkeypatch.setattr(JoinTask, "report", counted)
    wf = Workflow(wide_fan_in(5, parents["tag"]))
    wf.run({})
    await wf
    assert built == []
    assert len(wf.tasks_by_id["j"].outputs["data_stash"]) == 5


async def test_join_timeout_while_waiting_keeps_its_batches(parents: dict[str, str]) -> None:
    tmpl = template(
        [
            ("r", "join-tag"),
            ("p1", "join-tag"),
            ("p2", "join-tag"),
            ("p3", "join-never"),
            ("j", "join", {"timeout": 0.02}),
        ],
        {"r": ["p1", "p2", "p3"], "p1": ["j"], "p2": ["j"], "p3": ["j"]},
    )
    recorder = Recorder()
    try:
        wf = Workflow(tmpl)
        wf.run({})
        await until(lambda: "j" in wf.tasks_by_id)
        with pytest.raises(asyncio.CancelledError):
            await wf.tasks_by_id["j"]
        wf.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wf
    finally:
        recorder.close()
    j = wf.tasks_by_id["j"]
    assert j.timed_out
    assert j.outputs == {"from": "p1", "data_stash": [{"from": "p1"}, {"from": "p2"}]}
    assert join_progress(recorder)[-1] == ("timeout", ["p1", "p2"])


async def test_join_stash_holds_copies_of_its_parents_outputs(parents: dict[str, str]) -> None:
    wf = Workflow(wide_fan_in(3, parents["tag"]))
    wf.run({})
    await wf
    stash = wf.tasks_by_id["j"].outputs["data_stash"]
    for data in stash:
        data["changed"] = True
    assert all(wf.tasks_by_id[p].outputs == {"from": p} for p in ("p1", "p2", "p3"))


async def test_join_takes_a_queued_event_before_a_later_parent(parents: dict[str, str]) -> None:
    # An event already in the join's queue (as a rescue puts there) is taken before the
    # data of a parent that ends after it.
    for tid in ("p1", "p2", "p3"):
        GATES[tid] = asyncio.Event()
    wf = Workflow(fan_in(parents["held"]))
    wf.run({})
    GATES["p1"].set()
    await until(lambda: "j" in wf.tasks_by_id)
    j = wf.tasks_by_id["j"]
    await until(lambda: len(j.holder.report()["tasks"]) == 1)  # type: ignore[attr-defined]
    j.queue.put_nowait(Event({"from": "p2"}, source=wf.source("p2", None)))
    GATES["p3"].set()
    await asyncio.wait_for(asyncio.shield(j), 5)
    GATES["p2"].set()  # its own data comes once the join is done: not taken
    await asyncio.wait_for(wf, 5)
    assert [d["from"] for d in j.outputs["data_stash"]] == ["p1", "p2", "p3"]
    assert [t["id"] for t in j.holder.report()["tasks"]] == ["p1", "p2", "p3"]  # type: ignore[attr-defined]


async def test_a_join_subclass_gets_its_other_parents_as_events_in_its_queue(
    parents: dict[str, str], registered: Callable[..., Any]
) -> None:
    """Only tukio's own JoinTask is handed data directly: a subclass reading its queue sees Events."""
    seen: list[tuple[str | None, dict[str, Any]]] = []

    class Gathering(JoinTask):
        async def execute(self, event: Any) -> dict[str, Any]:
            seen.append((event.source.task_template_id, event.data))
            while len(seen) < 3:
                arrived = await self.queue.get()
                seen.append((arrived.source.task_template_id, arrived.data))
            return {"count": len(seen)}

    registered("join-gathering", Gathering, "execute")
    tpl = fan_in(parents["tag"])
    for task in tpl.tasks:  # fan_in's join, run by the subclass
        if task.uid == "j":
            task.name = "join-gathering"
    wf = Workflow(tpl)
    wf.run({})
    await asyncio.wait_for(wf, 5)
    assert sorted(source for source, _ in seen) == ["p1", "p2", "p3"]
    assert all(data == {"from": source} for source, data in seen)
    assert wf.tasks_by_id["j"].outputs == {"count": 3}
    # Its queue was its own: nothing was left in it, nothing went around it.
    assert wf.tasks_by_id["j"].queue.empty()
