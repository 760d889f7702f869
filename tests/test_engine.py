"""The engine: loading templates, triggering, policies, stopping."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
from support import template, until

from tukio import Engine, Event, FutureState, TemplateError, UnknownTaskName, Workflow, WorkflowTemplate, get_broker
from tukio.errors import WorkflowRootTaskError


class Gate:
    """A task body that parks until released; counts starts."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0
        self.started_event = asyncio.Event()

    async def __call__(self, event: Event) -> dict[str, Any]:
        self.started += 1
        self.started_event.set()
        await self.release.wait()
        return dict(event.data)


@pytest.fixture
def gate(registered: Callable[..., Any], task_name: Callable[[str], str]) -> tuple[Gate, str]:
    g = Gate()
    name = task_name("gate")

    async def gated(event: Event) -> dict[str, Any]:
        return await g(event)

    registered(name, gated)
    return g, name


async def test_load_validates(engine: Engine, noop: str) -> None:
    with pytest.raises(UnknownTaskName, match=r"tasks\[0\]\.name: unknown task name 'nope'"):
        await engine.load(template([("a", "nope")], {}))
    with pytest.raises(WorkflowRootTaskError, match="no root task"):
        await engine.load(WorkflowTemplate.from_dict({"tasks": [], "graph": {}}))
    assert engine.selector.templates == []
    loaded = await engine.load({"id": "w", "tasks": [{"id": "a", "name": noop}], "graph": {}})
    assert engine.selector.get("w") is loaded


async def test_load_replaces_same_id_without_touching_running(
    engine: Engine, gate: tuple[Gate, str], noop: str
) -> None:
    g, name = gate
    first = template([("a", name)], {}, id="w", policy="start-new")
    await engine.load(first)
    (wf,) = await engine.data_received({}) or []
    second = template([("b", noop)], {}, id="w", policy="start-new")
    await engine.load(second)
    assert engine.selector.templates == [second]
    assert not wf.done()
    g.release.set()
    await wf
    assert wf.template is first


async def test_reload_is_all_or_nothing(engine: Engine, noop: str) -> None:
    a = template([("a", noop)], {}, id="a")
    await engine.load(a)
    with pytest.raises(TemplateError):
        await engine.reload([template([("b", noop)], {}, id="b"), template([("x", "unknown-name")], {}, id="c")])
    assert engine.selector.templates == [a]
    b = template([("b", noop)], {}, id="b")
    await engine.reload([b])
    assert engine.selector.templates == [b]


async def test_unload(engine: Engine, noop: str) -> None:
    tmpl = await engine.load(template([("a", noop)], {}, id="u"))
    assert await engine.unload("u") is tmpl
    with pytest.raises(KeyError, match="'u'"):
        await engine.unload("u")
    assert await engine.data_received({}) == []


async def test_topics_select_templates(engine: Engine, noop: str) -> None:
    any_topic = await engine.load(template([("a", noop)], {}, id="any", policy="start-new"))
    on_blob = await engine.load(template([("a", noop)], {}, id="blob", topics=["blob"], policy="start-new"))
    await engine.load(template([("a", noop)], {}, id="never", topics=[], policy="start-new"))

    async def started(topic: str | None) -> set[str]:
        wfs = await engine.data_received({"k": 1}, topic=topic) or []
        await asyncio.gather(*wfs)
        return {wf.template.uid for wf in wfs}

    assert await started(None) == {any_topic.uid}
    assert await started("blob") == {any_topic.uid, on_blob.uid}
    assert await started("other") == {any_topic.uid}
    assert (await engine.trigger("never", {})) is not None


async def test_data_received_dispatches_to_listening_tasks_first(
    engine: Engine, registered: Callable[..., Any]
) -> None:
    got: list[Event] = []
    ready = asyncio.Event()

    async def listener(event: Event) -> None:
        task = asyncio.current_task()
        ready.set()
        got.append(await task.queue.get())  # type: ignore[union-attr]

    registered("listener-approval", listener)
    await engine.load(template([("wait", "listener-approval", {"topics": ["approval"]})], {}, id="l", topics=[]))
    wf = await engine.trigger("l", {"order": 1})
    assert wf is not None
    await ready.wait()
    started = await engine.data_received({"ok": True}, topic="approval")
    assert started == []
    await wf
    assert [e.data for e in got] == [{"ok": True}]
    assert got[0].topic == "approval"


async def test_data_received_rejects_bad_data(engine: Engine) -> None:
    with pytest.raises(ValueError, match="must be a dict"):
        await engine.data_received(["not", "a", "dict"])  # type: ignore[arg-type]


async def test_each_workflow_gets_its_own_data(engine: Engine, registered: Callable[..., Any]) -> None:
    async def mutate(event: Event) -> None:
        event.data["touched"] = True

    registered("mutate-own", mutate)
    await engine.load(template([("a", "mutate-own")], {}, id="m1"))
    await engine.load(template([("a", "mutate-own")], {}, id="m2"))
    data = {"v": 1}
    wfs = await engine.data_received(data) or []
    await asyncio.gather(*wfs)
    assert data == {"v": 1}
    assert [wf.tasks_by_id["a"].inputs for wf in wfs] == [{"v": 1}, {"v": 1}]


@pytest.mark.parametrize("listening", [False, True])
async def test_the_root_gets_an_event_of_its_own_on_the_topic(
    engine: Engine, registered: Callable[..., Any], listening: bool
) -> None:
    # Without a listener on the topic, no event is dispatched: the root's event is the only one made.
    seen: list[Event] = []

    async def root(event: Event) -> None:
        seen.append(event)

    def listener(event: Event) -> None:
        seen.append(event)

    registered("root-own-event", root)
    await engine.load(template([("a", "root-own-event")], {}, id="own", topics=["t"]))
    if listening:
        get_broker().register(listener, topic="t")
    data = {"v": 1}
    (wf,) = await engine.data_received(data, topic="t") or []
    await wf
    *heard, got = seen
    assert len(heard) == (1 if listening else 0)
    assert isinstance(got, Event)
    assert got.topic == "t"
    assert got.source is None
    assert got.data == {"v": 1}
    assert got.data is not data
    assert all(h is not got for h in heard)


async def test_trigger_unknown_returns_none(engine: Engine) -> None:
    assert await engine.trigger("nope", {}) is None


async def test_run_once_ignores_policy_and_loading(engine: Engine, gate: tuple[Gate, str]) -> None:
    g, name = gate
    tmpl = template([("a", name)], {}, id="once", policy="skip")
    one = await engine.run_once(tmpl, {})
    two = await engine.run_once(tmpl, {})
    assert one is not None
    assert two is not None
    assert one is not two
    assert engine.selector.get("once") is None
    assert {wf.uid for wf in engine.instances} == {one.uid, two.uid}
    g.release.set()
    await asyncio.gather(one, two)
    with pytest.raises(UnknownTaskName):
        await engine.run_once(template([("a", "missing-name")], {}), {})


# -- overrun policies -------------------------------------------------------------
async def test_policy_start_new(engine: Engine, gate: tuple[Gate, str]) -> None:
    g, name = gate
    await engine.load(template([("a", name)], {}, id="p", policy="start-new"))
    wfs = [wf for _ in range(3) for wf in (await engine.data_received({}) or [])]
    assert len(wfs) == 3
    assert len(engine.running("p")) == 3
    g.release.set()
    await asyncio.gather(*wfs)
    assert engine.running("p") == []


async def test_policy_skip(engine: Engine, gate: tuple[Gate, str]) -> None:
    g, name = gate
    await engine.load(template([("a", name)], {}, id="p", policy="skip"))
    (first,) = await engine.data_received({}) or []
    assert await engine.data_received({}) == []
    assert await engine.trigger("p", {}) is None
    g.release.set()
    await first
    assert len(await engine.data_received({}) or []) == 1


async def test_policy_skip_until_unlock(engine: Engine, registered: Callable[..., Any]) -> None:
    release = asyncio.Event()

    async def unlock_then_wait(event: Event) -> None:
        if event.data.get("unlock"):
            Workflow.current_workflow().unlock_when_task_done()  # type: ignore[union-attr]

    async def park(event: Event) -> None:
        await release.wait()

    registered("sun-first", unlock_then_wait)
    registered("sun-park", park)
    await engine.load(template([("a", "sun-first"), ("b", "sun-park")], {"a": ["b"]}, id="p"))
    assert engine.selector.get("p").policy.value == "skip-until-unlock"  # type: ignore[union-attr]
    (locked,) = await engine.data_received({}) or []
    # Still locked (no task unlocks it): further data is skipped, several times.
    for _ in range(3):
        assert await engine.data_received({}) == []
    locked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await locked
    (unlocking,) = await engine.data_received({"unlock": True}) or []
    await until(lambda: "b" in unlocking.tasks_by_id)
    assert not unlocking.lock.locked()
    assert not unlocking.done()
    # Unlocked but running: new instances start, and they are locked.
    (second,) = await engine.data_received({}) or []
    assert await engine.data_received({}) == []
    release.set()
    await asyncio.gather(unlocking, second)
    assert engine.instances == []


async def test_policy_abort_running(engine: Engine, gate: tuple[Gate, str]) -> None:
    g, name = gate
    await engine.load(template([("a", name)], {}, id="p", policy="abort-running"))
    (first,) = await engine.data_received({"n": 1}) or []
    await g.started_event.wait()
    (second,) = await engine.data_received({"n": 2}) or []
    (third,) = await engine.data_received({"n": 3}) or []
    for old in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await old
    assert first.future_state is FutureState.cancelled
    # The second never ran: cancelled while waiting for the first to end.
    assert second.tasks_by_id == {}
    await until(lambda: "a" in third.tasks_by_id)
    g.release.set()
    await third
    assert third.tasks_by_id["a"].inputs == {"n": 3}


async def test_running_instances_per_template_as_workflows_end_one_by_one(
    engine: Engine, gate: tuple[Gate, str], noop: str
) -> None:
    g, name = gate
    await engine.load(template([("a", noop)], {}, id="quick", policy="skip-until-unlock"))
    await engine.load(template([("a", name)], {}, id="slow", policy="skip-until-unlock"))
    for _ in range(3):  # each ends before the next starts
        wf = await engine.trigger("quick", {})
        assert wf is not None
        assert engine.running("quick") == [wf]
        await asyncio.wait_for(wf, 5)
        assert engine.running("quick") == []
    slow = await engine.trigger("slow", {})
    assert slow is not None
    assert engine.running("slow") == [slow]
    assert engine.running("quick") == []
    assert await engine.trigger("slow", {}) is None  # still locked: its count was not lost
    quick = await engine.trigger("quick", {})
    assert quick is not None
    assert engine.running("quick") == [quick]
    g.release.set()
    await asyncio.wait_for(asyncio.gather(slow, quick), 5)
    assert engine.instances == []
    assert engine.running("slow") == []


# -- stopping -----------------------------------------------------------------
async def test_stop_waits_for_running_workflows(engine: Engine, gate: tuple[Gate, str]) -> None:
    g, name = gate
    await engine.load(template([("a", name)], {}, id="s"))
    (wf,) = await engine.data_received({}) or []
    stopping = asyncio.ensure_future(engine.stop())
    await asyncio.sleep(0)
    assert not stopping.done()
    assert await engine.data_received({}) is None
    assert await engine.trigger("s", {}) is None
    g.release.set()
    await asyncio.wait_for(stopping, 5)
    assert wf.done()


async def test_stop_force_cancels(engine: Engine, gate: tuple[Gate, str]) -> None:
    _, name = gate
    await engine.load(template([("a", name)], {}, id="s"))
    (wf,) = await engine.data_received({}) or []
    await asyncio.wait_for(engine.stop(force=True), 5)
    assert wf.cancelled()
    assert engine.instances == []


async def test_stop_with_nothing_running() -> None:
    engine = Engine()
    assert await asyncio.wait_for(engine.stop(), 1) is None


async def test_engine_installs_task_factory(engine: Engine) -> None:
    from tukio import tukio_factory

    assert asyncio.get_running_loop().get_task_factory() is tukio_factory


def test_legacy_loop_style_runs_without_warnings(tmp_path: Any) -> None:
    """Code written for the original (loop created first, passed around) still runs."""
    script = tmp_path / "legacy.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, tukio
            from tukio.task import register

            @register('legacy-task')
            async def t(event):
                return {'seen': event.data['v']}

            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            engine = tukio.Engine(loop=loop)
            tmpl = tukio.WorkflowTemplate.from_dict(
                {'tasks': [{'id': 'a', 'name': 'legacy-task'}], 'graph': {}})
            loop.run_until_complete(engine.load(tmpl))
            wflows = loop.run_until_complete(engine.data_received({'v': 3}))
            loop.run_until_complete(asyncio.wait(wflows))
            print(wflows[0].tasks_by_id['a'].outputs)
            loop.close()
            """
        )
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{'seen': 3}"


def test_two_engines_on_two_loops_do_not_share_state(registered: Callable[..., Any]) -> None:
    async def ident(event: Event) -> dict[str, Any]:
        return {"loop": id(asyncio.get_running_loop())}

    registered("two-loops", ident)

    async def main() -> tuple[int, int, int]:
        engine = Engine()
        await engine.load(template([("a", "two-loops")], {}, id="same-id"))
        (wf,) = await engine.data_received({}) or []
        await wf
        await engine.stop()
        return wf.tasks_by_id["a"].outputs["loop"], id(asyncio.get_running_loop()), len(engine.instances)

    first = asyncio.run(main())
    second = asyncio.run(main())
    assert first[0] == first[1]
    assert second[0] == second[1]
    assert first[2] == second[2] == 0
