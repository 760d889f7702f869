"""Behaviours of the original tukio 1.1.2 that migrated code relies on.

Each test states what the original did (read from its source: engine.py,
workflow.py, task/join.py) and checks that tukio does the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from support import Recorder, template, until

from tukio import Engine, Event, TemplateError, Workflow, WorkflowTemplate
from tukio.workflow import OverrunPolicy


@pytest.fixture
def gate_task(registered: Callable[..., Any], task_name: Callable[[str], str]) -> tuple[str, asyncio.Event]:
    """A registered task that waits for a gate; returns its name and the gate."""
    gate = asyncio.Event()

    async def waits(event: Event) -> dict[str, Any]:
        await gate.wait()
        return {"done": True}

    name = task_name("gated")
    registered(name, waits)
    return name, gate


# -- 1. Engine is an asyncio.Future ------------------------------------------------------


async def test_engine_is_a_future() -> None:
    engine = Engine()
    assert isinstance(engine, asyncio.Future)
    assert not engine.done()
    seen: list[asyncio.Future[Any]] = []
    engine.add_done_callback(seen.append)
    # Nothing runs: stop() completes the engine at once.
    assert engine.stop() is engine
    assert engine.done()
    assert engine.result() is None
    await asyncio.sleep(0)  # done callbacks are scheduled, as for any future
    assert seen == [engine]
    assert await engine is None


async def test_engine_resolves_when_the_last_workflow_ends(gate_task: tuple[str, asyncio.Event]) -> None:
    name, gate = gate_task
    engine = Engine()
    wf = await engine.run_once(template([("a", name)], {}), {})
    assert wf is not None
    engine.stop()
    assert not engine.done()
    done, pending = await asyncio.wait([engine], timeout=0)
    assert (done, pending) == (set(), {engine})
    gate.set()
    done, _ = await asyncio.wait([engine], timeout=5)
    assert done == {engine}
    assert engine.result() is None
    assert wf.done()


async def test_engine_works_with_wait_for(gate_task: tuple[str, asyncio.Event]) -> None:
    name, gate = gate_task
    engine = Engine()
    await engine.run_once(template([("a", name)], {}), {})
    gate.set()
    assert await asyncio.wait_for(engine.stop(), 5) is None


async def test_engine_stop_force_cancels_running_workflows(gate_task: tuple[str, asyncio.Event]) -> None:
    name, _ = gate_task
    engine = Engine()
    wf = await engine.run_once(template([("a", name)], {}), {})
    assert wf is not None
    await asyncio.wait_for(engine.stop(force=True), 5)
    assert wf.cancelled()
    assert engine.done()


# -- 2. data_received after stop() still dispatches ---------------------------------------


async def test_data_received_after_stop_reaches_listening_tasks(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def waits_for_approval(event: Event) -> dict[str, Any]:
        queue = asyncio.current_task().queue  # type: ignore[union-attr]
        approval = await queue.get()
        got.set_result(approval.data)
        return {"approved": approval.data["ok"]}

    name = task_name("approval")
    registered(name, waits_for_approval)
    engine = Engine()
    tmpl = template([("a", name, {"topics": ["approvals"]})], {}, id="approve", topics=["requests"])
    await engine.load(tmpl)
    started = await engine.data_received({"n": 1}, topic="requests")
    assert started is not None
    assert len(started) == 1
    engine.stop()
    assert not engine.done()
    # The engine is draining: the event still reaches the waiting task, no new workflow starts.
    assert await engine.data_received({"ok": True}, topic="approvals") is None
    assert await engine.data_received({"n": 2}, topic="requests") is None
    assert await asyncio.wait_for(got, 5) == {"ok": True}
    await asyncio.wait_for(engine, 5)
    assert started[0].tasks_by_id["a"].outputs == {"approved": True}
    assert engine.instances == []


async def test_trigger_and_run_once_return_none_once_stopping(gate_task: tuple[str, asyncio.Event]) -> None:
    name, _ = gate_task
    engine = Engine()
    tmpl = template([("a", name)], {}, id="t")
    await engine.load(tmpl)
    engine.stop()
    assert await engine.trigger("t", {}) is None
    assert await engine.run_once(tmpl, {}) is None
    assert await engine.rescue(tmpl, {"exec": {"id": "x"}, "tasks": []}) is None


# -- trigger / run_once accept the original's per-call timeout ------------------------------


async def test_trigger_timeout_times_the_workflow_out(gate_task: tuple[str, asyncio.Event]) -> None:
    name, _ = gate_task
    engine = Engine()
    await engine.load(template([("a", name)], {}, id="slow", policy="start-new"))
    wf = await engine.trigger("slow", {}, timeout=0.01)
    assert wf is not None
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(wf, 5)
    assert wf.timed_out
    assert wf.report()["exec"]["state"] == "timeout"
    wf2 = await engine.run_once(template([("a", name)], {}), {}, timeout=0.01)
    assert wf2 is not None
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(wf2, 5)
    assert wf2.timed_out
    await asyncio.wait_for(engine.stop(force=True), 5)


# -- 3. OverrunPolicy member names ---------------------------------------------------------


def test_overrun_policy_has_the_original_member_names() -> None:
    assert [p.name for p in OverrunPolicy] == ["SKIP", "START_NEW", "SKIP_UNTIL_UNLOCK", "ABORT_RUNNING"]
    assert OverrunPolicy.SKIP.value == "skip"
    assert OverrunPolicy.START_NEW.value == "start-new"
    assert OverrunPolicy.SKIP_UNTIL_UNLOCK.value == "skip-until-unlock"
    assert OverrunPolicy.ABORT_RUNNING.value == "abort-running"
    assert OverrunPolicy.get(None) is OverrunPolicy.SKIP_UNTIL_UNLOCK
    assert OverrunPolicy("abort-running") is OverrunPolicy.ABORT_RUNNING
    # The lower-case names are aliases of the same members.
    assert OverrunPolicy.skip is OverrunPolicy.SKIP
    assert OverrunPolicy.abort_running is OverrunPolicy.ABORT_RUNNING
    assert WorkflowTemplate(policy="start-new").policy == OverrunPolicy.START_NEW


# -- 4. schema: any positive integer, kept as given -----------------------------------------


@pytest.mark.parametrize("schema", [1, 2, 7, 2024])
def test_schema_accepts_any_positive_integer(schema: int) -> None:
    tmpl = WorkflowTemplate.from_dict({"id": "s", "schema": schema, "tasks": [], "graph": {}})
    assert tmpl.schema == schema
    assert tmpl.as_dict()["schema"] == schema
    assert WorkflowTemplate.from_dict(tmpl.as_dict()).schema == schema


def test_schema_defaults_to_one() -> None:
    assert WorkflowTemplate.from_dict({"tasks": [], "graph": {}}).schema == 1
    assert WorkflowTemplate().schema == 1


@pytest.mark.parametrize("schema", [0, -1, 1.5, "2", True, [1]])
def test_schema_rejects_what_is_not_a_positive_integer(schema: Any) -> None:
    with pytest.raises(TemplateError, match="schema: must be a positive integer"):
        WorkflowTemplate.from_dict({"schema": schema, "tasks": [], "graph": {}})


# -- 5. validate() returns True ---------------------------------------------------------------


def test_validate_returns_true(registered: Callable[..., Any], task_name: Callable[[str], str]) -> None:
    async def noop(event: Event) -> None:
        return None

    name = task_name("noop")
    registered(name, noop)
    assert template([("a", name)], {}).validate() is True


# -- 6. set_next_tasks ------------------------------------------------------------------------


async def test_set_next_tasks_ignores_ids_that_are_not_successors(
    registered: Callable[..., Any], task_name: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    async def chooser(event: Event) -> dict[str, Any]:
        Workflow.current_workflow().set_next_tasks(["c", "ghost", "a"])  # type: ignore[union-attr]
        return {"chosen": True}

    async def noop(event: Event) -> None:
        return None

    choose, leaf = task_name("chooser"), task_name("leaf")
    registered(choose, chooser)
    registered(leaf, noop)
    wf = Workflow(template([("a", choose), ("b", leaf), ("c", leaf)], {"a": ["b", "c"]}))
    with caplog.at_level(logging.WARNING):
        wf.run({})
        await asyncio.wait_for(wf, 5)
    # Only the successor named ran; the task itself succeeded.
    assert set(wf.tasks_by_id) == {"a", "c"}
    assert wf.tasks_by_id["a"].outputs == {"chosen": True}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'ghost'" in r.getMessage() for r in warnings)
    assert any("'a'" in r.getMessage() for r in warnings)


async def test_set_next_tasks_with_no_valid_id_starts_nothing(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    async def chooser(event: Event) -> None:
        Workflow.current_workflow().set_next_tasks(["nope"])  # type: ignore[union-attr]

    async def noop(event: Event) -> None:
        return None

    choose, leaf = task_name("chooser"), task_name("leaf")
    registered(choose, chooser)
    registered(leaf, noop)
    wf = Workflow(template([("a", choose), ("b", leaf)], {"a": ["b"]}))
    wf.run({})
    await asyncio.wait_for(wf, 5)
    assert set(wf.tasks_by_id) == {"a"}
    assert wf.report()["tasks"][0]["exec"]["state"] == "finished"


async def test_set_next_tasks_from_a_task_of_another_workflow_raises(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    other = Workflow(template([("x", "join")], {}))
    errors: list[BaseException] = []

    async def meddler(event: Event) -> None:
        try:
            other.set_next_tasks([])
        except RuntimeError as exc:
            errors.append(exc)

    name = task_name("meddler")
    registered(name, meddler)
    wf = Workflow(template([("a", name)], {}))
    wf.run({})
    await asyncio.wait_for(wf, 5)
    assert len(errors) == 1
    assert other.uid in str(errors[0])


# -- 7. JoinTask.report() and its progress events ---------------------------------------------


async def test_join_report_has_the_original_shape(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    gates = {tid: asyncio.Event() for tid in ("p1", "p2")}

    async def parent(event: Event) -> dict[str, Any]:
        tid = asyncio.current_task().template.uid  # type: ignore[union-attr]
        await gates[tid].wait()
        return {"from": tid}

    async def root(event: Event) -> None:
        return None

    p, r = task_name("parent"), task_name("root")
    registered(p, parent)
    registered(r, root)
    tmpl = template(
        [("r", r), ("p1", p), ("p2", p), ("j", "join", {"config": {"wait_for": ["p1", "p2"]}})],
        {"r": ["p1", "p2"], "p1": ["j"], "p2": ["j"]},
    )
    recorder = Recorder()
    wf = Workflow(tmpl)
    before = datetime.now(timezone.utc)
    wf.run({})
    gates["p2"].set()
    await until(lambda: "j" in wf.tasks_by_id)
    gates["p1"].set()
    await asyncio.wait_for(wf, 5)
    await asyncio.sleep(0)
    recorder.close()

    report = wf.tasks_by_id["j"].holder.report()  # type: ignore[attr-defined]
    assert set(report) == {"status", "tasks"}
    assert report["status"] == "done"
    assert [t["id"] for t in report["tasks"]] == ["p2", "p1"]  # arrival order
    for entry in report["tasks"]:
        assert set(entry) == {"id", "end_time"}
        assert isinstance(entry["end_time"], datetime)
        assert entry["end_time"].utcoffset() == timedelta(0)
        assert entry["end_time"] >= before
    # The workflow report carries it as the join's 'reporting'.
    j = next(t for t in wf.report()["tasks"] if t["id"] == "j")["exec"]
    assert j["reporting"]["status"] == "done"

    # A progress event at each arrival and at the end, with a snapshot of the report.
    progress = [
        e.data["content"]
        for e in recorder.events
        if e.data.get("type") == "task-progress" and e.source is not None and e.source.task_template_id == "j"
    ]
    assert [(c["status"], [t["id"] for t in c["tasks"]]) for c in progress] == [
        ("running", ["p2"]),
        ("running", ["p2", "p1"]),
        ("done", ["p2", "p1"]),
    ]


async def test_join_timeout_sets_timeout_status(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    async def quick(event: Event) -> dict[str, Any]:
        return {"quick": True}

    async def never(event: Event) -> None:
        await asyncio.Event().wait()

    q, n = task_name("quick"), task_name("never")
    registered(q, quick)
    registered(n, never)
    tmpl = template(
        [("r", q), ("p1", q), ("p2", n), ("j", "join", {"timeout": 0.01})],
        {"r": ["p1", "p2"], "p1": ["j"], "p2": ["j"]},
    )
    recorder = Recorder()
    wf = Workflow(tmpl)
    wf.run({})
    await until(lambda: "j" in wf.tasks_by_id)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(wf.tasks_by_id["j"], 5)
    wf.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wf
    await asyncio.sleep(0)
    recorder.close()
    report = wf.tasks_by_id["j"].holder.report()  # type: ignore[attr-defined]
    assert report["status"] == "timeout"
    assert [t["id"] for t in report["tasks"]] == ["p1"]
    statuses = [
        e.data["content"]["status"]
        for e in recorder.events
        if e.data.get("type") == "task-progress" and e.source is not None and e.source.task_template_id == "j"
    ]
    assert statuses == ["running", "timeout"]


# -- more of the same kind: names and signatures of the original --------------------------


def test_exec_state_enums_have_the_original_member_names() -> None:
    from tukio.task.factory import TaskExecState
    from tukio.utils import SkipTask
    from tukio.workflow import WorkflowExecState

    assert TaskExecState.BEGIN.value == "task-begin"
    assert TaskExecState.TIMEOUT.value == "task-timeout"
    assert TaskExecState.begin is TaskExecState.BEGIN
    assert TaskExecState.values()[:6] == [
        "task-begin",
        "task-end",
        "task-error",
        "task-skip",
        "task-progress",
        "task-timeout",
    ]
    assert TaskExecState.from_exception(SkipTask()) is TaskExecState.SKIP
    assert TaskExecState.from_exception(ValueError()) is TaskExecState.ERROR
    assert [m.name for m in WorkflowExecState] == ["BEGIN", "END", "ERROR", "PROGRESS", "SUSPEND", "RESUME"]
    assert WorkflowExecState.values() == [
        "workflow-begin",
        "workflow-end",
        "workflow-error",
        "workflow-progress",
        "workflow-suspend",
        "workflow-resume",
    ]
    assert WorkflowExecState.end is WorkflowExecState.END


def test_task_registry_register_has_the_original_signature(task_name: Callable[[str], str]) -> None:
    from tukio.task import TaskHolder, TaskRegistry

    async def plain(event: Any) -> None:
        return None

    class Holder(TaskHolder):
        async def go(self, event: Any) -> None:
            return None

    fn_name, cls_name = task_name("direct-fn"), task_name("direct-cls")
    try:
        TaskRegistry.register(plain, fn_name)
        TaskRegistry.register(Holder, cls_name, "go")
        assert TaskRegistry.get(fn_name) == (None, plain)
        assert TaskRegistry.get(cls_name) == (Holder, Holder.go)
        codes = TaskRegistry.codes()
        assert codes[plain.__code__] == fn_name
        assert codes[Holder.go.__code__] == cls_name
        with pytest.raises(ValueError, match="already registered"):
            TaskRegistry.register(plain, fn_name)
        with pytest.raises(TypeError, match="not a coroutine function"):
            TaskRegistry.register(len, task_name("bad"))
        with pytest.raises(AttributeError, match="nope"):
            TaskRegistry.register(Holder, task_name("bad"), "nope")
    finally:
        for name in (fn_name, cls_name):
            if TaskRegistry.registered(name):
                TaskRegistry.unregister(name)


async def test_unlock_when_task_done_accepts_a_task(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    gate = asyncio.Event()
    unlocked_while_b_runs: list[bool] = []

    async def first(event: Event) -> None:
        wf = Workflow.current_workflow()
        assert wf is not None
        wf.unlock_when_task_done(asyncio.current_task())  # type: ignore[arg-type]

    async def second(event: Event) -> None:
        wf = Workflow.current_workflow()
        assert wf is not None
        unlocked_while_b_runs.append(not wf.lock.locked())
        await gate.wait()

    a, b = task_name("unlock-a"), task_name("unlock-b")
    registered(a, first)
    registered(b, second)
    wf = Workflow(template([("a", a), ("b", b)], {"a": ["b"]}))
    wf.run({})
    await until(lambda: unlocked_while_b_runs)
    assert unlocked_while_b_runs == [True]
    gate.set()
    await asyncio.wait_for(wf, 5)
    with pytest.raises(RuntimeError, match="not one of its tasks"):
        wf.unlock_when_task_done(asyncio.current_task())  # type: ignore[arg-type]


def test_names_the_original_modules_exposed_still_import() -> None:
    from tukio.engine import Listen, OverrunPolicy
    from tukio.task import TimeoutHandle
    from tukio.workflow import DAG, Event, FutureState, OverrunPolicyHandler, TaskTemplate, UnknownTaskName

    assert {Listen.__name__, OverrunPolicy.__name__, TimeoutHandle.__name__} == {
        "Listen",
        "OverrunPolicy",
        "TimeoutHandle",
    }
    assert {DAG.__name__, Event.__name__, FutureState.__name__, TaskTemplate.__name__} == {
        "DAG",
        "Event",
        "FutureState",
        "TaskTemplate",
    }
    assert issubclass(UnknownTaskName, Exception)
    assert callable(OverrunPolicyHandler)


async def test_workflow_end_and_error_events_carry_the_original_contents(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    gate = asyncio.Event()

    async def quick(event: Event) -> None:
        return None

    async def parked(event: Event) -> None:
        await gate.wait()

    q, p = task_name("quick"), task_name("parked")
    registered(q, quick)
    registered(p, parked)

    def ends(recorder: Recorder, wf: Workflow) -> list[tuple[str, Any]]:
        return [
            (e.data["type"], e.data["content"])
            for e in recorder.events
            if e.source is not None and e.source.workflow_exec_id == wf.uid and e.data["type"].startswith("workflow-e")
        ]

    recorder = Recorder()
    finished = Workflow(template([("a", q)], {}))
    finished.run({})
    await asyncio.wait_for(finished, 5)
    cancelled = Workflow(template([("a", p)], {}))
    cancelled.run({})
    await until(lambda: "a" in cancelled.tasks_by_id)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    broken = Workflow(WorkflowTemplate.from_dict({"tasks": [], "graph": {}}))
    broken.run({})
    with pytest.raises(TemplateError):
        await asyncio.wait_for(broken, 5)
    await asyncio.sleep(0)
    recorder.close()
    assert ends(recorder, finished) == [("workflow-end", None)]
    assert ends(recorder, cancelled) == [("workflow-end", {"cancel": True})]
    [(kind, content)] = ends(recorder, broken)
    assert kind == "workflow-error"
    assert isinstance(content, TemplateError)
