"""Workflow execution: data flow, end states, branching, control, reports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from support import Recorder, settle, template, until

from tukio import Event, FutureState, SkipTask, TaskHolder, TukioTask, TukioTaskError, Workflow, WorkflowTemplate
from tukio.errors import WorkflowRootTaskError
from tukio.task import TaskTemplate


@pytest.fixture
def names(registered: Callable[..., Any], task_name: Callable[[str], str]) -> dict[str, str]:
    """Register a set of generic tasks; return role -> unique registered name."""
    roles: dict[str, Any] = {}

    async def echo(event: Any) -> Any:
        return None

    async def add(event: Event) -> dict[str, Any]:
        tid = asyncio.current_task().template.uid  # type: ignore[union-attr]
        return {**event.data, tid: True}

    async def fail(event: Event) -> None:
        raise ValueError("boom")

    async def skip(event: Event) -> None:
        raise SkipTask("not today")

    async def task_error(event: Event) -> None:
        raise TukioTaskError({"partial": 1})

    async def forever(event: Event) -> None:
        await asyncio.Event().wait()

    class Slow(TaskHolder):
        async def run(self, event: Event) -> None:
            await asyncio.Event().wait()

        def teardown(self) -> dict[str, Any]:
            return {"torn": self.config.get("tag")}

    roles.update(echo=echo, add=add, fail=fail, skip=skip, task_error=task_error, forever=forever)
    out = {}
    for role, fn in roles.items():
        name = task_name(role)
        registered(name, fn)
        out[role] = name
    out["slow"] = task_name("slow")
    registered(out["slow"], Slow, "run")
    return out


async def run(tmpl: Any, data: dict[str, Any] | None = None) -> Workflow:
    wf = Workflow(tmpl)
    wf.run(data if data is not None else {"x": 1})
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(wf, 5)
    return wf


def state(wf: Workflow, tid: str) -> str:
    return next(t["exec"]["state"] for t in wf.report()["tasks"] if t["id"] == tid)


async def test_results_flow_downstream_and_none_passes_inputs(names: dict[str, str]) -> None:
    tmpl = template([("a", names["add"]), ("b", names["echo"]), ("c", names["add"])], {"a": ["b"], "b": ["c"]})
    wf = await run(tmpl, {"x": 1})
    assert wf.result() == set(wf.tasks)
    assert wf.tasks_by_id["a"].outputs == {"x": 1, "a": True}
    assert wf.tasks_by_id["b"].inputs == {"x": 1, "a": True}
    assert wf.tasks_by_id["b"].outputs == {"x": 1, "a": True}
    assert wf.tasks_by_id["c"].outputs == {"x": 1, "a": True, "c": True}
    assert wf.future_state is FutureState.finished


async def test_successor_event_names_its_parent(names: dict[str, str], registered: Callable[..., Any]) -> None:
    seen: list[Event] = []

    async def probe(event: Event) -> None:
        seen.append(event)

    registered("probe-parent", probe)
    tmpl = template([("a", names["add"]), ("b", "probe-parent")], {"a": ["b"]})
    wf = await run(tmpl)
    (event,) = seen
    assert event.source is not None
    assert event.source.task_template_id == "a"
    assert event.source.workflow_exec_id == wf.uid
    assert event.source.task_exec_id == wf.tasks_by_id["a"].uid


async def test_skip_lets_inputs_flow(names: dict[str, str]) -> None:
    tmpl = template([("a", names["add"]), ("s", names["skip"]), ("c", names["add"])], {"a": ["s"], "s": ["c"]})
    wf = await run(tmpl)
    assert state(wf, "s") == "skipped"
    assert wf.tasks_by_id["c"].inputs == {"x": 1, "a": True}


async def test_exception_stops_only_its_branch(names: dict[str, str]) -> None:
    tmpl = template(
        [("a", names["add"]), ("bad", names["fail"]), ("after", names["add"]), ("ok", names["add"])],
        {"a": ["bad", "ok"], "bad": ["after"]},
    )
    wf = await run(tmpl)
    assert wf.future_state is FutureState.finished
    assert state(wf, "bad") == "exception"
    assert state(wf, "ok") == "finished"
    assert "after" not in wf.tasks_by_id
    report = {t["id"]: t["exec"] for t in wf.report()["tasks"]}
    assert report["after"] is None
    assert report["bad"]["error"] == "ValueError: boom"


async def test_tukio_task_error_keeps_outputs_and_stops_branch(names: dict[str, str]) -> None:
    tmpl = template([("a", names["task_error"]), ("b", names["add"])], {"a": ["b"]})
    wf = await run(tmpl)
    assert state(wf, "a") == "exception"
    assert wf.tasks_by_id["a"].outputs == {"partial": 1}
    assert "b" not in wf.tasks_by_id


async def test_task_timeout_outputs_flow_downstream(names: dict[str, str]) -> None:
    tmpl = template(
        [
            ("root", names["add"]),
            ("plain", names["forever"], {"timeout": 0.01}),
            ("held", names["slow"], {"timeout": 0.01, "config": {"tag": 7}}),
            ("after_plain", names["echo"]),
            ("after_held", names["echo"]),
        ],
        {"root": ["plain", "held"], "plain": ["after_plain"], "held": ["after_held"]},
    )
    wf = await run(tmpl)
    assert state(wf, "plain") == "timeout"
    assert state(wf, "held") == "timeout"
    assert wf.tasks_by_id["plain"].timed_out
    # No holder: the inputs flow on; a holder: what teardown() returned.
    assert wf.tasks_by_id["after_plain"].inputs == {"x": 1, "root": True}
    assert wf.tasks_by_id["after_held"].inputs == {"torn": 7}
    assert wf.future_state is FutureState.finished


async def test_workflow_timeout_cancels_tasks(names: dict[str, str]) -> None:
    tmpl = template([("a", names["forever"])], {}, timeout=0.01)
    wf = Workflow(tmpl)
    wf.run({})
    with pytest.raises(asyncio.CancelledError):
        await wf
    assert wf.timed_out
    assert wf.future_state is FutureState.timeout
    assert wf.report()["exec"]["state"] == "timeout"
    assert state(wf, "a") == "cancelled"


async def test_cancel(names: dict[str, str]) -> None:
    tmpl = template([("a", names["add"]), ("b", names["forever"]), ("c", names["forever"])], {"a": ["b", "c"]})
    wf = Workflow(tmpl)
    wf.run({})
    await until(lambda: len(wf.tasks_by_id) == 3)
    assert wf.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wf
    assert wf.future_state is FutureState.cancelled
    assert state(wf, "b") == state(wf, "c") == "cancelled"
    assert state(wf, "a") == "finished"
    assert not wf.cancel()


async def test_cancel_before_run_ends_at_once(names: dict[str, str]) -> None:
    wf = Workflow(template([("a", names["add"])], {}))
    assert wf.cancel()
    assert wf.cancelled()


async def test_run_twice_raises(names: dict[str, str]) -> None:
    wf = Workflow(template([("a", names["add"])], {}))
    wf.run({})
    with pytest.raises(RuntimeError, match="already started"):
        wf.run({})
    await wf


async def test_template_without_single_root_ends_in_error(names: dict[str, str]) -> None:
    tmpl = template([("a", names["add"]), ("b", names["add"])], {})
    rec = Recorder()
    wf = Workflow(tmpl)
    wf.run({})
    with pytest.raises(WorkflowRootTaskError, match=r"2 root tasks \(a, b\)"):
        await wf
    await settle()
    rec.close()
    assert rec.types() == ["workflow-begin", "workflow-error"]
    assert wf.report()["exec"]["state"] == "exception"


async def test_set_next_tasks_chooses_successors(
    names: dict[str, str], registered: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def chooser(event: Event) -> None:
        Workflow.current_workflow().set_next_tasks(["right"])  # type: ignore[union-attr]

    async def bad_chooser(event: Event) -> None:
        Workflow.current_workflow().set_next_tasks(["nope", "right"])  # type: ignore[union-attr]

    registered("chooser", chooser)
    registered("bad-chooser", bad_chooser)
    tmpl = template([("a", "chooser"), ("left", names["add"]), ("right", names["add"])], {"a": ["left", "right"]})
    wf = await run(tmpl)
    assert set(wf.tasks_by_id) == {"a", "right"}

    # As in the original: an id that is not a successor is ignored (with a
    # warning), the task itself succeeds and only the valid ids named run.
    tmpl = template([("a", "bad-chooser"), ("left", names["add"]), ("right", names["add"])], {"a": ["left", "right"]})
    with caplog.at_level(logging.WARNING, logger="tukio.workflow"):
        wf = await run(tmpl)
    assert state(wf, "a") == "finished"
    assert set(wf.tasks_by_id) == {"a", "right"}
    assert any("'nope' is not one of its successors" in r.getMessage() for r in caplog.records)


async def test_current_workflow(names: dict[str, str], registered: Callable[..., Any]) -> None:
    found: list[Any] = []

    async def where(event: Event) -> None:
        found.append(Workflow.current_workflow())

        async def child() -> None:
            found.append(Workflow.current_workflow())

        await asyncio.ensure_future(child())

    registered("where", where)
    assert Workflow.current_workflow() is None
    wf = await run(template([("a", "where")], {}))
    assert found == [wf, wf]
    assert Workflow.current_workflow() is None


async def test_current_workflow_in_a_holder_and_the_plain_tasks_it_creates(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    found: dict[str, Any] = {}

    async def look(key: str) -> None:
        found[key] = Workflow.current_workflow()

    class Holder(TaskHolder):
        def __init__(self, config: dict[str, Any] | None) -> None:
            super().__init__(config)
            found["init"] = Workflow.current_workflow()
            self.early = asyncio.ensure_future(look("made in init"))

        async def run(self, event: Event) -> None:
            await self.early
            found["run"] = Workflow.current_workflow()
            await asyncio.get_running_loop().create_task(look("child"))
            await asyncio.ensure_future(asyncio.ensure_future(look("grandchild")))

    name = task_name("holder")
    registered(name, Holder, "run")
    wf = await run(template([("a", name), ("b", name)], {"a": ["b"]}))
    assert set(found) == {"init", "made in init", "run", "child", "grandchild"}
    assert all(value is wf for value in found.values())
    assert Workflow.current_workflow() is None


async def test_current_workflow_of_a_workflow_started_by_another_ones_task(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    seen: list[tuple[str, Any]] = []

    class Inner(TaskHolder):
        def __init__(self, config: dict[str, Any] | None) -> None:
            super().__init__(config)
            seen.append(("inner init", Workflow.current_workflow()))

        async def run(self, event: Event) -> None:
            async def child() -> None:
                seen.append(("inner child", Workflow.current_workflow()))

            await asyncio.ensure_future(child())

    async def outer(event: Event) -> None:
        seen.append(("outer", Workflow.current_workflow()))
        inner = Workflow(template([("i", inner_name)], {}))
        seen.append(("inner wf", inner))
        inner.run({})
        await asyncio.wait_for(inner, 5)

        async def child() -> None:
            seen.append(("outer child", Workflow.current_workflow()))

        await asyncio.ensure_future(child())

    inner_name, outer_name = task_name("inner"), task_name("outer")
    registered(inner_name, Inner, "run")
    registered(outer_name, outer)
    wf = await run(template([("o", outer_name)], {}))
    inner_wf = dict(seen)["inner wf"]
    assert seen == [
        ("outer", wf),
        ("inner wf", inner_wf),
        ("inner init", inner_wf),
        ("inner child", inner_wf),
        ("outer child", wf),
    ]


def test_current_workflow_in_holders_made_at_once_in_two_threads(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    """Two loops in two threads: a holder's __init__ sees its own workflow, not the other thread's."""
    a_inside, b_inside, a_looked = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    class Holder(TaskHolder):
        def __init__(self, config: dict[str, Any] | None) -> None:
            super().__init__(config)
            side = (config or {})["side"]
            if side == "a":  # looks while b is inside its own __init__
                a_inside.set()
                assert b_inside.wait(5)
                seen["a"] = Workflow.current_workflow()
                a_looked.set()
            else:
                assert a_inside.wait(5)
                b_inside.set()
                assert a_looked.wait(5)
                seen["b"] = Workflow.current_workflow()

        async def run(self, event: Event) -> None:
            pass

    name = task_name("holder")
    registered(name, Holder, "run")
    made: dict[str, Workflow] = {}

    def side(key: str) -> None:
        async def main() -> None:
            tpl = WorkflowTemplate.from_dict(
                {"id": key, "tasks": [{"id": "t", "name": name, "config": {"side": key}}], "graph": {}}
            )
            wf = made[key] = Workflow(tpl)
            wf.run({})
            await asyncio.wait_for(wf, 5)
            seen[key + " after"] = Workflow.current_workflow()

        asyncio.run(main())

    threads = [threading.Thread(target=side, args=(key,)) for key in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == {"a": made["a"], "b": made["b"], "a after": None, "b after": None}


async def test_set_next_tasks_outside_a_task_raises(names: dict[str, str]) -> None:
    wf = Workflow(template([("a", names["add"])], {}))
    with pytest.raises(RuntimeError, match="running tasks"):
        wf.set_next_tasks([])
    with pytest.raises(RuntimeError, match="running tasks"):
        wf.unlock_when_task_done()


async def test_lock_released_by_task_or_at_end(names: dict[str, str], registered: Callable[..., Any]) -> None:
    gate = asyncio.Event()

    async def unlocker(event: Event) -> None:
        Workflow.current_workflow().unlock_when_task_done()  # type: ignore[union-attr]

    async def waiter(event: Event) -> None:
        await gate.wait()

    registered("unlocker", unlocker)
    registered("waiter", waiter)
    wf = Workflow(template([("a", "unlocker"), ("b", "waiter")], {"a": ["b"]}))
    assert wf.lock.locked()
    wf.run({})
    await until(lambda: "b" in wf.tasks_by_id)
    assert not wf.lock.locked()
    assert not wf.done()
    gate.set()
    await wf

    wf = Workflow(template([("a", names["add"])], {}))
    wf.run({})
    assert wf.lock.locked()
    await wf
    assert not wf.lock.locked()


async def test_task_with_two_parents_gets_second_event_in_queue(registered: Callable[..., Any]) -> None:
    got: list[Any] = []

    async def fast(event: Event) -> dict[str, Any]:
        return {"from": asyncio.current_task().template.uid}  # type: ignore[union-attr]

    async def slow_parent(event: Event) -> dict[str, Any]:
        for _ in range(3):
            await asyncio.sleep(0)
        return {"from": asyncio.current_task().template.uid}  # type: ignore[union-attr]

    async def child(event: Event) -> None:
        task = asyncio.current_task()
        second = await task.queue.get()  # type: ignore[union-attr]
        got.extend([event.data, second.data])

    registered("fast-p", fast)
    registered("slow-p", slow_parent)
    registered("child-2p", child)
    tmpl = template(
        [("r", "fast-p"), ("p1", "fast-p"), ("p2", "slow-p"), ("c", "child-2p")],
        {"r": ["p1", "p2"], "p1": ["c"], "p2": ["c"]},
    )
    wf = await run(tmpl)
    assert got == [{"from": "p1"}, {"from": "p2"}]
    assert len([t for t in wf.tasks if t.template.uid == "c"]) == 1  # type: ignore[union-attr]


async def test_task_that_cannot_be_created_is_reported(names: dict[str, str], registered: Callable[..., Any]) -> None:
    class Broken(TaskHolder):
        def __init__(self, config: dict[str, Any] | None = None) -> None:
            raise RuntimeError("no database")

        async def run(self, event: Event) -> None:  # pragma: no cover - never created
            pass

    registered("broken", Broken, "run")
    tmpl = template(
        [("a", names["add"]), ("b", "broken"), ("after_b", names["add"]), ("c", names["add"])],
        {"a": ["b", "c"], "b": ["after_b"]},
    )
    rec = Recorder()
    wf = await run(tmpl)
    rec.close()
    assert "b" not in wf.tasks_by_id
    assert all(t.template.uid != "b" for t in wf.tasks)  # type: ignore[union-attr]
    assert state(wf, "b") == "exception"
    b = next(t for t in wf.report()["tasks"] if t["id"] == "b")["exec"]
    assert b["error"] == "RuntimeError: no database"
    assert b["inputs"] == {"x": 1, "a": True}
    assert state(wf, "c") == "finished"
    assert wf.future_state is FutureState.finished
    assert rec.types("b") == ["task-error"]


async def test_execution_events_once_per_transition(names: dict[str, str]) -> None:
    tmpl = template(
        [("a", names["add"]), ("s", names["skip"]), ("f", names["fail"])],
        {"a": ["s", "f"]},
    )
    rec = Recorder()
    wf = await run(tmpl)
    # Reading results again must not emit anything.
    for task in wf.tasks:
        if not task.cancelled():
            task.exception()
    wf.tasks_by_id["a"].result()
    wf.tasks_by_id["a"].result()
    await settle()
    rec.close()
    assert rec.types("a") == ["task-begin", "task-end"]
    assert rec.types("s") == ["task-begin", "task-skip"]
    assert rec.types("f") == ["task-begin", "task-error"]
    wf_types = [t for t in rec.types() if t.startswith("workflow")]
    assert wf_types == ["workflow-begin", "workflow-end"]
    begin = rec.events[0]
    assert begin.data == {"type": "workflow-begin", "content": {"x": 1}}
    assert begin.topic == "__exec_topic__"
    error = next(e for e in rec.events if e.data["type"] == "task-error")
    assert isinstance(error.data["content"]["exception"], ValueError)


async def test_exec_events_go_to_both_topics(names: dict[str, str]) -> None:
    from tukio import get_broker
    from tukio.broker import workflow_exec_topics

    per_wf: list[str] = []
    wf = Workflow(template([("a", names["add"])], {}))
    _, own = workflow_exec_topics(wf.uid)

    def on_own(event: Event) -> None:
        per_wf.append(event.data["type"])

    get_broker().register(on_own, own)
    wf.run({})
    await wf
    await settle()
    get_broker().unregister(on_own, own)
    assert per_wf == ["workflow-begin", "task-begin", "task-end", "workflow-end"]


async def test_suspend_and_resume(names: dict[str, str], registered: Callable[..., Any]) -> None:
    gate = asyncio.Event()
    starts: list[Any] = []

    async def gated(event: Event) -> dict[str, Any]:
        starts.append(dict(event.data))
        await gate.wait()
        return {**event.data, "gated": True}

    registered("gated", gated)
    tmpl = template([("a", names["add"]), ("g", "gated"), ("c", names["add"])], {"a": ["g"], "g": ["c"]})
    rec = Recorder()
    wf = Workflow(tmpl)
    wf.run({"x": 1})
    await until(lambda: len(starts) == 1)
    assert wf.suspend()
    assert not wf.suspend()
    await settle()
    assert state(wf, "g") == "suspended"
    assert wf.future_state is FutureState.suspended
    assert not wf.done()
    gate.set()
    assert wf.resume()
    assert not wf.resume()
    await asyncio.wait_for(wf, 5)
    rec.close()
    assert starts == [{"x": 1, "a": True}, {"x": 1, "a": True}]
    assert wf.tasks_by_id["c"].outputs == {"x": 1, "a": True, "gated": True, "c": True}
    assert "workflow-suspend" in rec.types()
    assert "workflow-resume" in rec.types()


async def test_cancel_while_suspended(names: dict[str, str]) -> None:
    wf = Workflow(template([("a", names["forever"])], {}))
    wf.run({})
    await asyncio.sleep(0)
    wf.suspend()
    await settle()
    assert not wf.done()
    wf.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wf


async def test_report_shape(names: dict[str, str], registered: Callable[..., Any]) -> None:
    class Reporting(TaskHolder):
        async def run(self, event: Event) -> None:
            return None

        def report(self) -> dict[str, Any]:
            return {"rows": 3}

    registered("reporting", Reporting, "run")
    tmpl = template(
        [("a", "reporting"), ("b", names["fail"]), ("never", names["add"])], {"a": ["b"], "b": ["never"]}, title="T"
    )
    wf = await run(tmpl, {"k": "v"})
    report = wf.report()
    assert report["title"] == "T"
    assert set(report) >= {"id", "title", "policy", "topics", "timeout", "schema", "tasks", "graph", "exec"}
    assert set(report["exec"]) == {"id", "start", "end", "state", "version"}
    assert report["exec"]["id"] == wf.uid
    assert report["exec"]["start"] <= report["exec"]["end"]
    assert report["exec"]["start"].tzinfo is not None
    tasks = {t["id"]: t["exec"] for t in report["tasks"]}
    assert tasks["never"] is None
    assert tasks["a"]["reporting"] == {"rows": 3}
    assert set(tasks["a"]) >= {"id", "start", "end", "state", "inputs", "outputs"}
    assert tasks["a"]["inputs"] == {"k": "v"}


async def test_task_is_tukio_task_with_template(names: dict[str, str]) -> None:
    wf = await run(template([("a", names["add"])], {}))
    task = wf.tasks_by_id["a"]
    assert isinstance(task, TukioTask)
    assert task.workflow is wf
    assert task.template is wf.template.root()
    assert task.as_dict()["state"] == "finished"


async def test_successors_modifying_their_event_do_not_change_their_parent(registered: Callable[..., Any]) -> None:
    async def source(event: Event) -> dict[str, Any]:
        return {"n": 1}

    async def modify(event: Event) -> dict[str, Any]:
        event.data["n"] += 10
        return event.data

    registered("wf-source", source)
    registered("wf-modify", modify)
    tmpl = template(
        [("r", "wf-source"), ("a", "wf-modify"), ("b", "wf-modify")],
        {"r": ["a", "b"], "a": [], "b": []},
    )
    wf = await run(tmpl)
    assert wf.tasks_by_id["r"].outputs == {"n": 1}
    assert wf.tasks_by_id["a"].inputs == {"n": 1}
    assert wf.tasks_by_id["a"].outputs == {"n": 11}
    assert wf.tasks_by_id["b"].inputs == {"n": 1}
    assert wf.tasks_by_id["b"].outputs == {"n": 11}


async def test_task_failing_once_scheduled_is_a_creation_error(noop: str) -> None:
    # The successor's timeout cannot be armed: asyncio has already scheduled the
    # task, which then runs on a closed coroutine. Only the creation error counts:
    # the workflow neither waits for that task nor counts its end.
    tmpl = WorkflowTemplate()
    root, bad, last = TaskTemplate(noop, uid="root"), TaskTemplate(noop, uid="bad"), TaskTemplate(noop, uid="c")
    bad.timeout = "soon"  # type: ignore[assignment]
    for t in (root, bad, last):
        tmpl.add(t)
    tmpl.link(root, bad)
    tmpl.link(root, last)
    wf = Workflow(tmpl)
    ended_at_end: list[bool] = []
    wf.on_end(lambda _: ended_at_end.append(wf.tasks_by_id["c"].ended()))
    wf.run({"x": 1})
    await asyncio.wait_for(wf, 5)
    assert ended_at_end == [True]  # it did not end early, on the closed task's end
    assert "bad" not in wf.tasks_by_id
    assert state(wf, "bad") == "exception"
    assert state(wf, "c") == "finished"
    assert wf.future_state is FutureState.finished
    await settle()
