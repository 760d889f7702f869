"""The benchmark workloads: each runs once through tukio and once in plain asyncio.

A `Case` pairs two callables doing the same work; each runs on a fresh event
loop and returns its measurements (a dict of metric name to value). The plain
asyncio side is hand-written the way one would without an engine: one
``create_task`` per task, each task awaiting its parents. It is the physical
limit the engine is compared with.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from tukio import Engine, Event, EventSource, OverrunPolicy, Workflow, WorkflowTemplate, get_broker, register
from tukio.broker import workflow_exec_topics

Measures = dict[str, float]

POLICIES = [p.value for p in OverrunPolicy]


@dataclass(frozen=True)
class Metric:
    """How to show one measured value."""

    label: str
    unit: str
    higher_is_better: bool = False
    plain: bool = True  # False: plain asyncio has nothing to compare with


@dataclass
class Case:
    """One row group of the results: the same work through tukio and in plain asyncio."""

    scenario: str
    case: str
    metrics: dict[str, Metric]
    tukio: Callable[[], Measures]
    plain: Callable[[], Measures]
    repeat: int | None = None  # fixed number of runs (memory is not noisy)
    warmup: bool = True
    params: dict[str, Any] = field(default_factory=dict)


# The scaling cases pause the cyclic garbage collector (see the README): with
# 100,000 workflows alive, CPython's full collections cost more per object
# than everything else, in plain asyncio as in tukio. `run.py --gc` keeps it on.
PAUSE_GC = True


def on_new_loop(main: Callable[[], Coroutine[Any, Any, Measures]], pause_gc: bool = False) -> Measures:
    """Run `main()` on a fresh event loop, after a full garbage collection."""
    gc.collect()
    if pause_gc:
        gc.disable()
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()
        gc.enable()


# -- tasks used by the workflows ---------------------------------------------------
@register("bench-noop")
async def noop(data: Any) -> None:
    """A task that does nothing: its inputs flow to its successors."""


class Parking:
    """Where parked workflows wait: one asyncio.Event each, and an arrival count."""

    def __init__(self) -> None:
        self.gates: list[asyncio.Event] = []
        self.expected = 0
        self.arrived = 0
        self.all_parked: asyncio.Future[None] | None = None

    def prepare(self, n: int) -> None:
        """Make `n` closed gates and wait for `n` arrivals."""
        self.gates = [asyncio.Event() for _ in range(n)]
        self.arrived = 0
        self.expect(n)

    def expect(self, n: int) -> None:
        """Wait for `n` more arrivals (see `parked`)."""
        self.expected = self.arrived + n
        self.all_parked = asyncio.get_running_loop().create_future()

    async def park(self, index: int) -> None:
        """Count the arrival, then wait until gate `index` opens."""
        self.arrived += 1
        if self.arrived == self.expected:
            assert self.all_parked is not None
            self.all_parked.set_result(None)
        await self.gates[index].wait()

    async def parked(self) -> None:
        """Wait until every expected workflow has reached its gate."""
        assert self.all_parked is not None
        await self.all_parked

    def release(self, order: str) -> None:
        """Open every gate, first-parked first ('fifo') or last first ('lifo')."""
        gates = self.gates if order == "fifo" else reversed(self.gates)
        for gate in gates:
            gate.set()


PARKING = Parking()


@register("bench-park")
async def park(event: Event) -> None:
    """The root of a parked workflow: wait for the gate named by the data."""
    await PARKING.park(event.data["i"])


# -- templates -----------------------------------------------------------------------
def template(
    uid: str, graph: dict[str, list[str]], names: dict[str, str], policy: str = "start-new"
) -> WorkflowTemplate:
    """Build a template through the JSON format, as users do."""
    tasks = [{"id": tid, "name": names.get(tid, "bench-noop")} for tid in graph]
    for tid in names:
        if tid == "join":
            tasks[list(graph).index(tid)]["config"] = {"wait_for": sum(tid in s for s in graph.values())}
    return WorkflowTemplate.from_dict({"id": uid, "policy": policy, "topics": None, "tasks": tasks, "graph": graph})


def chain_template(n: int) -> WorkflowTemplate:
    ids = [f"t{i}" for i in range(n)]
    graph = {tid: [ids[i + 1]] if i + 1 < n else [] for i, tid in enumerate(ids)}
    return template("chain", graph, {})


def fanout_template(n: int, join: bool) -> WorkflowTemplate:
    leaves = [f"t{i}" for i in range(n)]
    graph: dict[str, list[str]] = {"root": leaves}
    graph.update({leaf: ["join"] if join else [] for leaf in leaves})
    if join:
        graph["join"] = []
    return template("fanout-join" if join else "fanout", graph, {"join": "join"} if join else {})


def parked_template(uid: str, policy: str) -> WorkflowTemplate:
    return template(uid, {"root": ["child"], "child": []}, {"root": "bench-park"}, policy)


# -- plain asyncio workflows -----------------------------------------------------------
async def plain_node(parents: Iterable[asyncio.Task[Any]], data: Any) -> Any:
    """A no-op task in plain asyncio: await every parent, pass the first one's data on."""
    for i, parent in enumerate(parents):
        result = await parent
        if i == 0:
            data = result
    return data


async def plain_join(parents: list[asyncio.Task[Any]]) -> Any:
    """A join in plain asyncio: the first parent's data plus every parent's data."""
    stash = [await parent for parent in parents]
    return {**stash[0], "data_stash": stash}


async def plain_park(data: dict[str, Any]) -> dict[str, Any]:
    await PARKING.park(data["i"])
    return data


def timed(start: float, count: int) -> float:
    """Microseconds per item since `start`."""
    return (time.perf_counter() - start) * 1e6 / count


# -- 1. chain ------------------------------------------------------------------------
def chain_case(n: int) -> Case:
    tpl = chain_template(n)

    async def tukio_run() -> Measures:
        engine = Engine()
        await engine.load(tpl)
        tpl.plan()  # built once per loaded template, not per run
        start = time.perf_counter()
        workflow = await engine.trigger(tpl.uid, {"x": 1})
        assert workflow is not None
        await workflow
        us = timed(start, n)
        assert len(workflow.tasks) == n
        return {"us_per_task": us}

    async def plain_run() -> Measures:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        task = loop.create_task(plain_node((), {"x": 1}))
        for _ in range(n - 1):
            task = loop.create_task(plain_node((task,), None))
        await task
        return {"us_per_task": timed(start, n)}

    return Case(
        "chain",
        f"{n} no-op tasks in a chain",
        {"us_per_task": Metric("per task", "us")},
        lambda: on_new_loop(tukio_run),
        lambda: on_new_loop(plain_run),
        params={"tasks": n},
    )


def chain_lazy_case(n: int) -> Case:
    """The chain against plain asyncio that starts each task when its parent ends.

    That is tukio's model (a task exists once it is reached), so this is the
    physical limit of the design rather than of asyncio.
    """
    tukio_side = chain_case(n).tukio

    async def plain_run() -> Measures:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        left = n

        def parent_done(parent: asyncio.Task[Any]) -> None:
            nonlocal left
            left -= 1
            if left:
                loop.create_task(plain_node((), parent.result())).add_done_callback(parent_done)
            else:
                done.set_result(None)

        start = time.perf_counter()
        loop.create_task(plain_node((), {"x": 1})).add_done_callback(parent_done)
        await done
        return {"us_per_task": timed(start, n)}

    return Case(
        "chain-lazy",
        f"{n} no-op tasks in a chain, each started when its parent ends",
        {"us_per_task": Metric("per task", "us")},
        tukio_side,
        lambda: on_new_loop(plain_run),
        params={"tasks": n},
    )


# -- 2. fan-out and join -------------------------------------------------------------
def fanout_case(n: int, join: bool) -> Case:
    tpl = fanout_template(n, join)
    total = n + (2 if join else 1)

    async def tukio_run() -> Measures:
        engine = Engine()
        await engine.load(tpl)
        tpl.plan()  # built once per loaded template, not per run
        start = time.perf_counter()
        workflow = await engine.trigger(tpl.uid, {"x": 1})
        assert workflow is not None
        await workflow
        us = timed(start, total)
        if join:
            joined = workflow.tasks_by_id["join"]
            assert len(joined.outputs["data_stash"]) == n, joined.outputs
        return {"us_per_task": us}

    async def plain_run() -> Measures:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        root = loop.create_task(plain_node((), {"x": 1}))
        leaves = [loop.create_task(plain_node((root,), None)) for _ in range(n)]
        if join:
            await loop.create_task(plain_join(leaves))
        else:
            await asyncio.gather(*leaves)
        return {"us_per_task": timed(start, total)}

    what = f"root -> {n} no-op tasks" + (" -> join" if join else "")
    return Case(
        "fanout-join" if join else "fanout",
        what,
        {"us_per_task": Metric("per task", "us")},
        lambda: on_new_loop(tukio_run),
        lambda: on_new_loop(plain_run),
        params={"tasks": total},
    )


# -- 3. trigger throughput -------------------------------------------------------------
def trigger_case(n: int, eager: bool = False) -> Case:
    """`n` data_received on a one-task template; with `eager`, tasks start eagerly (3.12+)."""
    tpl = template("one-task", {"only": []}, {})

    async def tukio_run() -> Measures:
        engine = Engine(eager_start=eager)
        await engine.load(tpl)
        tpl.plan()  # built once per loaded template, not per run
        start = time.perf_counter()
        for i in range(n):
            await engine.data_received({"i": i}, topic="bench")
        await engine.stop()
        return {"wf_per_s": n / (time.perf_counter() - start)}

    async def plain_run() -> Measures:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        tasks = [loop.create_task(plain_node((), {"i": i})) for i in range(n)]
        await asyncio.gather(*tasks)
        return {"wf_per_s": n / (time.perf_counter() - start)}

    return Case(
        "trigger-eager" if eager else "trigger",
        f"{n} data_received on a one-task template (start-new{', eager start' if eager else ''})",
        {"wf_per_s": Metric("throughput", "wf/s", higher_is_better=True)},
        lambda: on_new_loop(tukio_run),
        lambda: on_new_loop(plain_run),
        params={"workflows": n},
    )


# -- 4. scaling: many workflows parked at once ---------------------------------------------
#
# Every workflow is `root -> child`, its root waiting on an asyncio.Event of
# its own (made before the clock starts). "Trigger" times starting n
# workflows until every root waits at its gate; "completion" times opening
# the gates (in trigger order, or the reverse) until every workflow is done.
SAME_ID = "parked"


async def tukio_park(engine: Engine, template_ids: list[str], n: int) -> tuple[list[Workflow], float]:
    """Start one workflow per id (or n of the single id); return them and the cost per workflow."""
    PARKING.prepare(n)
    ids = template_ids if len(template_ids) == n else template_ids * n
    start = time.perf_counter()
    workflows = []
    for i, uid in enumerate(ids):
        workflow = await engine.trigger(uid, {"i": i})
        assert workflow is not None
        workflows.append(workflow)
    await PARKING.parked()
    return workflows, timed(start, n)


async def plain_park_all(n: int) -> tuple[list[asyncio.Task[Any]], float]:
    """Start n root -> child pairs in plain asyncio; return the children and the cost per pair."""
    loop = asyncio.get_running_loop()
    PARKING.prepare(n)
    start = time.perf_counter()
    children = []
    for i in range(n):
        root = loop.create_task(plain_park({"i": i}))
        children.append(loop.create_task(plain_node((root,), None)))
    await PARKING.parked()
    return children, timed(start, n)


async def complete(futures: list[Any], order: str) -> float:
    """Open every gate in `order`; return the cost per future until all are done."""
    start = time.perf_counter()
    PARKING.release(order)
    await asyncio.wait(futures)
    return timed(start, len(futures))


def scaling_same_case(n: int, checks: int) -> Case:
    """Many instances of one template: trigger, policy checks, completion, abort."""
    templates = {policy: parked_template(SAME_ID, policy) for policy in POLICIES}

    async def tukio_run() -> Measures:
        engine = Engine()
        await engine.load(templates["start-new"])
        out: Measures = {}
        workflows, out["trigger_us"] = await tukio_park(engine, [SAME_ID], n)
        # Triggers the policy rejects, with n instances of the template running.
        for policy in ("skip", "skip-until-unlock"):
            await engine.load(templates[policy])
            start = time.perf_counter()
            for _ in range(checks):
                assert await engine.trigger(SAME_ID, {"i": 0}) is None
            out[f"check_{policy}_us"] = timed(start, checks)
        await engine.load(templates["start-new"])
        out["fifo_us"] = await complete(workflows, "fifo")
        workflows, trigger_us = await tukio_park(engine, [SAME_ID], n)
        out["trigger_us"] = (out["trigger_us"] + trigger_us) / 2
        out["lifo_us"] = await complete(workflows, "lifo")
        # abort-running: one trigger cancels the n running instances, then starts.
        workflows, _ = await tukio_park(engine, [SAME_ID], n)
        await engine.load(templates["abort-running"])
        PARKING.gates.append(asyncio.Event())
        PARKING.expect(1)
        start = time.perf_counter()
        new = await engine.trigger(SAME_ID, {"i": n})
        assert new is not None
        await PARKING.parked()
        out["abort_us"] = timed(start, n)
        assert all(w.cancelled() for w in workflows)
        PARKING.gates[n].set()
        await new
        return out

    async def plain_run() -> Measures:
        out: Measures = {}
        children, out["trigger_us"] = await plain_park_all(n)
        out["fifo_us"] = await complete(children, "fifo")
        children, trigger_us = await plain_park_all(n)
        out["trigger_us"] = (out["trigger_us"] + trigger_us) / 2
        out["lifo_us"] = await complete(children, "lifo")
        # Abort by hand: cancel every running task, then start the new pair.
        children, _ = await plain_park_all(n)
        loop = asyncio.get_running_loop()
        PARKING.gates.append(asyncio.Event())
        PARKING.expect(1)
        start = time.perf_counter()
        running = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in running:
            task.cancel()
        await asyncio.wait(running)
        root = loop.create_task(plain_park({"i": n}))
        child = loop.create_task(plain_node((root,), None))
        await PARKING.parked()
        out["abort_us"] = timed(start, n)
        PARKING.gates[n].set()
        await child
        return out

    return Case(
        "scaling-same",
        f"{n} running instances of one template",
        {
            "trigger_us": Metric("trigger (start-new)", "us/wf"),
            "check_skip_us": Metric("trigger rejected (skip)", "us", plain=False),
            "check_skip-until-unlock_us": Metric("trigger rejected (skip-until-unlock)", "us", plain=False),
            "fifo_us": Metric("completion FIFO", "us/wf"),
            "lifo_us": Metric("completion LIFO", "us/wf"),
            "abort_us": Metric("abort-running: cancel n, start 1", "us/wf"),
        },
        lambda: on_new_loop(tukio_run, pause_gc=PAUSE_GC),
        lambda: on_new_loop(plain_run, pause_gc=PAUSE_GC),
        warmup=n <= 1_000,
        params={"running": n},
    )


def scaling_distinct_case(n: int) -> Case:
    """n templates, one instance each, a third for each policy that can reject a trigger.

    Each trigger makes the policy look at its own template's running
    instances (there are none, so it starts) while n others run.
    """
    policies = [p for p in POLICIES if p != "start-new"]
    thirds = {policy: [f"{policy}-{i}" for i in range(k, n, len(policies))] for k, policy in enumerate(policies)}

    async def park_thirds(engine: Engine, out: Measures) -> list[Workflow]:
        PARKING.prepare(n)
        workflows: list[Workflow] = []
        for policy, ids in thirds.items():
            PARKING.expect(len(ids))
            start = time.perf_counter()
            for uid in ids:
                workflow = await engine.trigger(uid, {"i": len(workflows)})
                assert workflow is not None
                workflows.append(workflow)
            await PARKING.parked()
            out[f"trigger_{policy}_us"] = out.get(f"trigger_{policy}_us", 0.0) + timed(start, len(ids)) / 2
        return workflows

    async def tukio_run() -> Measures:
        engine = Engine()
        for policy, ids in thirds.items():
            for uid in ids:
                await engine.load(parked_template(uid, policy))
        out: Measures = {}
        out["fifo_us"] = await complete(await park_thirds(engine, out), "fifo")
        out["lifo_us"] = await complete(await park_thirds(engine, out), "lifo")
        return out

    async def plain_run() -> Measures:
        out: Measures = {}
        children, trigger_us = await plain_park_all(n)
        out["fifo_us"] = await complete(children, "fifo")
        children, trigger_us2 = await plain_park_all(n)
        out["lifo_us"] = await complete(children, "lifo")
        for policy in policies:
            out[f"trigger_{policy}_us"] = (trigger_us + trigger_us2) / 2
        return out

    metrics = {f"trigger_{p}_us": Metric(f"trigger ({p})", "us/wf") for p in policies}
    metrics["fifo_us"] = Metric("completion FIFO", "us/wf")
    metrics["lifo_us"] = Metric("completion LIFO", "us/wf")
    return Case(
        "scaling-distinct",
        f"{n} templates, one instance each",
        metrics,
        lambda: on_new_loop(tukio_run, pause_gc=PAUSE_GC),
        lambda: on_new_loop(plain_run, pause_gc=PAUSE_GC),
        warmup=n <= 1_000,
        params={"running": n},
    )


def memory_case(n: int) -> Case:
    """Bytes held per parked 2-task workflow (tracemalloc), against plain asyncio."""
    tpl = parked_template(SAME_ID, "start-new")

    async def measure(start_all: Callable[[], Awaitable[list[Any]]]) -> Measures:
        gc.collect()
        objects = len(gc.get_objects())
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            futures = await start_all()
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        objects = len(gc.get_objects()) - objects
        await complete(futures, "fifo")
        return {"kb_per_wf": used / n / 1024, "gc_objects_per_wf": objects / n}

    async def tukio_run() -> Measures:
        engine = Engine()
        await engine.load(tpl)
        PARKING.prepare(n)

        async def start_all() -> list[Any]:
            PARKING.expect(n)
            workflows = [await engine.trigger(SAME_ID, {"i": i}) for i in range(n)]
            await PARKING.parked()
            return workflows

        return await measure(start_all)

    async def plain_run() -> Measures:
        loop = asyncio.get_running_loop()
        PARKING.prepare(n)

        async def start_all() -> list[Any]:
            PARKING.expect(n)
            children = []
            for i in range(n):
                root = loop.create_task(plain_park({"i": i}))
                children.append(loop.create_task(plain_node((root,), None)))
            await PARKING.parked()
            return children

        return await measure(start_all)

    return Case(
        "memory",
        f"{n} parked 2-task workflows",
        {
            "kb_per_wf": Metric("memory per live workflow", "KB"),
            "gc_objects_per_wf": Metric("objects the cyclic GC tracks, per workflow", "objects"),
        },
        lambda: on_new_loop(tukio_run),
        lambda: on_new_loop(plain_run),
        repeat=1,
        warmup=False,
        params={"running": n},
    )


# -- 5. broker -------------------------------------------------------------------------------
class PlainBus:
    """A hand-written publish/subscribe: a dict of topic to handler list."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.by_topic: dict[str, list[Callable[[Any], Any]]] = {}
        self.everywhere: list[Callable[[Any], Any]] = []

    def register(self, handler: Callable[[Any], Any], topic: str | None = None) -> None:
        if topic is None:
            self.everywhere.append(handler)
        else:
            self.by_topic.setdefault(topic, []).append(handler)

    def unregister(self, handler: Callable[[Any], Any], topic: str) -> None:
        handlers = self.by_topic[topic]
        handlers.remove(handler)
        if not handlers:
            del self.by_topic[topic]

    def dispatch(self, data: dict[str, Any], topic: str) -> None:
        for handler in self.everywhere:
            self.loop.call_soon(handler, data)
        for handler in self.by_topic.get(topic, ()):
            self.loop.call_soon(handler, data)

    def publish(self, topics: tuple[str, ...], kind: str, content: Any) -> None:
        for handler in self.everywhere:
            self.loop.call_soon(handler, {"type": kind, "content": content})
        for topic in topics:
            for handler in self.by_topic.get(topic, ()):
                self.loop.call_soon(handler, {"type": kind, "content": content})


def make_handlers(n: int) -> list[Callable[[Any], None]]:
    """n distinct plain-callable handlers."""

    def make() -> Callable[[Any], None]:
        return lambda event: None

    return [make() for _ in range(n)]


def broker_case(n: int, dispatches: int) -> Case:
    """Registration, dispatch and unregistration with n handlers on distinct topics.

    With few handlers the register/unregister round is repeated, so every
    size times at least `dispatches` operations.
    """
    topics = [f"topic-{i}" for i in range(n)]
    rounds = max(1, dispatches // n)

    async def run(bus: Any) -> Measures:
        handlers = make_handlers(n)
        out: Measures = dict.fromkeys(("register_us", "unregister_us"), 0.0)
        data = {"x": 1}
        for round_ in range(rounds):
            start = time.perf_counter()
            for handler, topic in zip(handlers, topics, strict=True):
                bus.register(handler, topic)
            out["register_us"] += timed(start, n * rounds)
            if round_ == 0:
                start = time.perf_counter()
                for _ in range(dispatches):
                    bus.dispatch(data, "nobody")
                out["dispatch_none_us"] = timed(start, dispatches)
                start = time.perf_counter()
                for _ in range(dispatches):
                    bus.dispatch(data, topics[-1])
                out["dispatch_one_us"] = timed(start, dispatches)
                await asyncio.sleep(0)  # run the queued handler calls
            start = time.perf_counter()
            for handler, topic in zip(handlers, topics, strict=True):
                bus.unregister(handler, topic)
            out["unregister_us"] += timed(start, n * rounds)
        return out

    async def tukio_run() -> Measures:
        return await run(get_broker())

    async def plain_run() -> Measures:
        return await run(PlainBus())

    return Case(
        "broker",
        f"{n} handlers on distinct topics",
        {
            "register_us": Metric("register", "us/handler"),
            "dispatch_none_us": Metric("dispatch, topic without subscriber", "us"),
            "dispatch_one_us": Metric("dispatch, topic with 1 subscriber", "us"),
            "unregister_us": Metric("unregister", "us/handler"),
        },
        lambda: on_new_loop(tukio_run, pause_gc=PAUSE_GC),
        lambda: on_new_loop(plain_run, pause_gc=PAUSE_GC),
        params={"handlers": n},
    )


# -- 6. execution events -----------------------------------------------------------------
def publish_case(calls: int, listener: bool) -> Case:
    topics = workflow_exec_topics("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    content = {"x": 1}

    async def tukio_run() -> Measures:
        broker = get_broker()
        if listener:
            broker.register(lambda event: None)
        source = EventSource("template", "workflow", "task", "task-exec")
        start = time.perf_counter()
        for _ in range(calls):
            broker.publish(topics, "task-end", content, lambda: source)
        out = {"ns_per_event": timed(start, calls) * 1000}
        await asyncio.sleep(0)
        return out

    async def plain_run() -> Measures:
        bus = PlainBus()
        if listener:
            bus.register(lambda event: None)
        start = time.perf_counter()
        for _ in range(calls):
            bus.publish(topics, "task-end", content)
        out = {"ns_per_event": timed(start, calls) * 1000}
        await asyncio.sleep(0)
        return out

    return Case(
        "exec-event",
        "Broker.publish, " + ("one global listener" if listener else "nobody listens"),
        {"ns_per_event": Metric("per event", "ns")},
        lambda: on_new_loop(tukio_run),
        lambda: on_new_loop(plain_run),
        params={"calls": calls, "listener": listener},
    )
