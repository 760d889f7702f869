"""Rescue: rebuilding a workflow from its last report (fast_forward)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from support import template, until

from tukio import Engine, Event, RescueError, Workflow

RUNS: Counter[str] = Counter()
GATE: dict[str, asyncio.Event] = {}


@pytest.fixture
def tasks(registered: Callable[..., Any]) -> None:
    RUNS.clear()
    GATE.clear()

    async def step(event: Event) -> dict[str, Any]:
        tid = asyncio.current_task().template.uid  # type: ignore[union-attr]
        RUNS[tid] += 1
        if tid in GATE:
            await GATE[tid].wait()
        return {**event.data, tid: RUNS[tid]}

    async def fail(event: Event) -> None:
        tid = asyncio.current_task().template.uid  # type: ignore[union-attr]
        RUNS[tid] += 1
        raise ValueError("bad")

    registered("rescue-step", step)
    registered("rescue-fail", fail)


def chain() -> Any:
    return template(
        [("r", "rescue-step"), ("a", "rescue-step"), ("b", "rescue-step"), ("c", "rescue-step"), ("d", "rescue-step")],
        {"r": ["a", "d"], "a": ["b"], "b": ["c"]},
        id="chain",
    )


async def interrupted_report(tmpl: Any, parked: str) -> dict[str, Any]:
    """Run `tmpl` until task `parked` runs, take the report, then kill the workflow."""
    GATE[parked] = asyncio.Event()
    wf = Workflow(tmpl)
    wf.run({"v": 0})
    await until(lambda: RUNS[parked] > 0 and all(t.as_dict()["end"] for k, t in wf.tasks_by_id.items() if k != parked))
    report = wf.report()
    wf.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wf
    del GATE[parked]
    return report


async def test_rescue_runs_only_what_was_not_done(tasks: None, engine: Engine) -> None:
    report = await interrupted_report(chain(), "b")
    assert {t["id"]: (t["exec"] or {}).get("state") for t in report["tasks"]} == {
        "r": "finished",
        "a": "finished",
        "b": "pending",
        "c": None,
        "d": "finished",
    }
    RUNS.clear()
    wf = await engine.rescue(chain(), report)
    assert wf.uid == report["exec"]["id"]
    assert wf in engine.instances
    await asyncio.wait_for(wf, 5)
    assert Counter({"b": 1, "c": 1}) == RUNS
    # b restarted with its parent's outputs from the report.
    assert wf.tasks_by_id["b"].inputs == {"v": 0, "r": 1, "a": 1}
    assert wf.tasks_by_id["c"].outputs == {"v": 0, "r": 1, "a": 1, "b": 1, "c": 1}
    final = wf.report()
    states = {t["id"]: t["exec"]["state"] for t in final["tasks"]}
    assert states == dict.fromkeys("rabcd", "finished")
    assert final["exec"]["state"] == "finished"
    assert final["exec"]["id"] == report["exec"]["id"]


async def test_rescue_from_a_report_that_went_through_json(tasks: None, engine: Engine) -> None:
    report = json.loads(json.dumps(await interrupted_report(chain(), "a"), default=str))
    RUNS.clear()
    wf = await engine.rescue(chain(), report)
    await asyncio.wait_for(wf, 5)
    assert Counter({"a": 1, "b": 1, "c": 1}) == RUNS
    assert wf.report()["exec"]["start"] == datetime.fromisoformat(report["exec"]["start"])


async def test_rescue_of_pending_root_reruns_it_with_its_inputs(tasks: None, engine: Engine) -> None:
    report = await interrupted_report(chain(), "r")
    RUNS.clear()
    wf = await engine.rescue(chain(), report)
    await asyncio.wait_for(wf, 5)
    assert Counter(dict.fromkeys("rabcd", 1)) == RUNS
    assert wf.tasks_by_id["r"].inputs == {"v": 0}


async def test_failed_branch_stays_stopped(tasks: None, engine: Engine) -> None:
    tmpl = template(
        [("r", "rescue-step"), ("bad", "rescue-fail"), ("after", "rescue-step"), ("slow", "rescue-step")],
        {"r": ["bad", "slow"], "bad": ["after"]},
    )
    report = await interrupted_report(tmpl, "slow")
    RUNS.clear()
    wf = await engine.rescue(tmpl, report)
    await asyncio.wait_for(wf, 5)
    assert Counter({"slow": 1}) == RUNS
    states = {t["id"]: (t["exec"] or {}).get("state") for t in wf.report()["tasks"]}
    assert states == {"r": "finished", "bad": "exception", "after": None, "slow": "finished"}


async def test_rescue_of_a_join_feeds_every_done_parent(tasks: None, engine: Engine) -> None:
    tmpl = template(
        [("r", "rescue-step"), ("p1", "rescue-step"), ("p2", "rescue-step"), ("j", "join")],
        {"r": ["p1", "p2"], "p1": ["j"], "p2": ["j"]},
    )
    wf = Workflow(tmpl)
    wf.run({})
    await wf
    report = wf.report()
    for task in report["tasks"]:
        if task["id"] == "j":
            task["exec"] = None  # as if the process died before the join started
    RUNS.clear()
    rescued = await engine.rescue(tmpl, report)
    await asyncio.wait_for(rescued, 5)
    assert Counter() == RUNS
    stash = rescued.tasks_by_id["j"].outputs["data_stash"]
    assert sorted(sorted(d) for d in stash) == [["p1", "r"], ["p2", "r"]]


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ("not a report", "must be a workflow report"),
        ({"exec": {"id": 3}, "tasks": []}, "exec.id"),
        ({"exec": {"id": "x"}, "tasks": "nope"}, "'tasks' must be a list"),
        ({"exec": {"id": "x"}, "tasks": [{"id": "r", "exec": None}]}, "never started"),
    ],
)
async def test_refused_rescue_leaves_nothing_behind(tasks: None, report: Any, message: str) -> None:
    engine = Engine()
    with pytest.raises(RescueError, match=message):
        await engine.rescue(chain(), report)
    assert engine.instances == []
    await asyncio.wait_for(engine.stop(), 1)


async def test_rescue_of_a_finished_report_ends_at_once(tasks: None, engine: Engine) -> None:
    wf = Workflow(chain())
    wf.run({})
    await wf
    RUNS.clear()
    again = await engine.rescue(chain(), wf.report())
    await asyncio.wait_for(again, 1)
    assert Counter() == RUNS
    assert again.report()["exec"]["state"] == "finished"


async def test_fast_forward_twice_raises(tasks: None) -> None:
    wf = Workflow(chain())
    wf.run({})
    await wf
    with pytest.raises(RuntimeError, match="already started"):
        wf.fast_forward(wf.report())


async def test_a_finished_entry_without_an_end_is_run_again(tasks: None, engine: Engine) -> None:
    # An end the workflow never recorded (no end time, no outputs) is not an
    # end: the task runs again with its parent's outputs, and its successors
    # get real data, not None.
    report = await interrupted_report(chain(), "b")
    for task in report["tasks"]:
        if task["id"] == "a":
            task["exec"]["end"] = None
            task["exec"]["outputs"] = None
    RUNS.clear()
    wf = await engine.rescue(chain(), report)
    await asyncio.wait_for(wf, 5)
    assert Counter({"a": 1, "b": 1, "c": 1}) == RUNS
    assert wf.tasks_by_id["a"].inputs == {"v": 0, "r": 1}
    assert wf.tasks_by_id["c"].outputs == {"v": 0, "r": 1, "a": 1, "b": 1, "c": 1}
