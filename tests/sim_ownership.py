"""A deterministic simulation of the ownership protocol, on real `SQLiteStore` objects and a virtual clock.

Three nodes share one SQLite file; each is a `SQLiteStore` whose lease
clock is the simulation's. One thread, no sleeping: the simulation picks,
from a seeded random generator, what happens next (a node beats, claims,
triggers, starts or ends a task body; time moves on; a node is paused past
its lease, crashes, or restarts under its name), and drives the nodes the
way `tukio.cluster` and the engine drive a store:

- a node starts a task body only while it owns the execution by its own
  lease deadline (`lease_expired`), else it beats and asks `lost` first;
- a body's end is a fenced write of its task record: refused once another
  node took the execution over; then the node drops the execution;
- a healthy node beats every third of its lease (its heartbeat has a
  thread of its own), and at random moments besides; a heartbeat that
  finds the lease expired ("late") asks `lost`, and the node drops what it
  lost; a replaced node stops;
- a claim takes dead nodes' unfinished executions, which resume after the
  last task whose end is committed (read from the store, as recovery does).

Every body is recorded outside the journal (node, epoch, task, when it
started and ended, whether its end was committed, whether its node was
paused or crashed while it ran). `check` verifies the promises of
SPEC.md Part 3 on that record and the store:

1. a task whose end is committed never starts again, anywhere;
2. no two bodies of one task overlap on nodes that stayed healthy while
   they ran (only a body in flight when its node was lost may run twice);
3. a task's end is committed once;
4. once the faults stop, every execution finishes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tukio.policy import OverrunPolicy
from tukio.store import SQLiteStore
from tukio.store.base import ExecutionRecord, TaskRecord

TASKS = ("t0", "t1", "t2")
TEMPLATE = {
    "id": "sim",
    "policy": "start-new",
    "tasks": [{"id": t, "name": "sim-task"} for t in TASKS],
    "graph": {"t0": ["t1"], "t1": ["t2"], "t2": []},
}
LEASE = 5.0


class Clock:
    """The simulation's time (seconds), shared by every node's store."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Body:
    """One run of a task body, as the record outside the journal keeps it."""

    exec_id: str
    task: str
    node: str
    epoch: int
    start: float
    end: float | None = None
    committed: bool = False
    faulted: bool = False  # its node was paused past a beat, or crashed, while it ran


@dataclass
class Node:
    """One engine process: its store, what it runs, and its state."""

    name: str
    store: SQLiteStore | None = None
    paused_until: float | None = None
    replaced: bool = False
    running: dict[str, Body] = field(default_factory=dict)  # exec id -> body in flight
    mine: dict[str, int] = field(default_factory=dict)  # exec id -> next task index (its in-memory view)
    fenced: list[str] = field(default_factory=list)
    last_beat: float = 0.0

    @property
    def up(self) -> bool:
        return self.store is not None and self.paused_until is None and not self.replaced


class Simulation:
    """One seeded run: `steps` actions, then the faults stop and the nodes finish the work."""

    def __init__(self, path: Path, seed: int, *, nodes: int = 3, steps: int = 120) -> None:
        self.path = path
        self.rng = random.Random(seed)
        self.clock = Clock()
        self.steps = steps
        self.nodes = [Node(f"n{i}") for i in range(nodes)]
        self.bodies: list[Body] = []
        self.commits: dict[tuple[str, str], float] = {}  # (exec, task) -> when its end was committed
        self.executions: list[str] = []
        self.counter = 0
        for node in self.nodes:
            self._boot(node)

    # -- the nodes -----------------------------------------------------------------------------
    def _boot(self, node: Node) -> None:
        store = SQLiteStore(self.path, clock=self.clock)
        store.attach(node.name, lease=LEASE)
        store.on_fenced = node.fenced.extend
        store.join()
        node.store, node.paused_until, node.replaced = store, None, False
        node.last_beat = self.clock.now
        node.running.clear()
        node.mine = {info.exec_id: self._next_task(store, info.exec_id) for info in store.owned()}

    def _next_task(self, store: SQLiteStore, exec_id: str) -> int:
        """The first task whose end is not committed (as recovery resumes)."""
        report = store.load(exec_id)
        done = {t["id"] for t in report.get("tasks", []) if (t.get("exec") or {}).get("state") == "finished"}
        for n, task in enumerate(TASKS):
            if task not in done:
                return n
        return len(TASKS)

    def _drop_fenced(self, node: Node) -> None:
        for exec_id in node.fenced:
            node.mine.pop(exec_id, None)
            body = node.running.pop(exec_id, None)
            if body is not None and body.end is None:
                body.end = self.clock.now  # cancelled here: it ends uncommitted
        node.fenced.clear()

    def _beat(self, node: Node) -> None:
        assert node.store is not None
        node.last_beat = self.clock.now
        beat = node.store.heartbeat()
        if beat == "replaced":
            node.replaced = True
        elif beat == "late":
            node.fenced.extend(node.store.lost(list(node.mine)))
            node.store.heartbeat()  # the lease runs again (the node looked what it lost)
        self._drop_fenced(node)

    def _claim(self, node: Node) -> None:
        assert node.store is not None
        for info in node.store.claim(["sim"]):
            node.mine[info.exec_id] = self._next_task(node.store, info.exec_id)

    def _trigger(self, node: Node) -> None:
        assert node.store is not None
        self.counter += 1
        exec_id = f"e{self.counter:04d}"
        template = node.store.serializer.dumps(TEMPLATE)
        begin = ExecutionRecord(exec_id, "sim", "pending", "2026-01-01T00:00:00+00:00", template=template, event="{}")
        decision, _ = node.store.admit(OverrunPolicy.START_NEW, begin, ())
        if decision.value != "skip":
            self.executions.append(exec_id)
            node.mine[exec_id] = 0

    def _start(self, node: Node) -> None:
        assert node.store is not None
        idle = sorted(e for e, n in node.mine.items() if e not in node.running and n < len(TASKS))
        if not idle:
            return
        exec_id = self.rng.choice(idle)
        if node.store.lease_expired():  # past its own deadline: confirm first (cluster.confirm)
            self._beat(node)
            if node.replaced:
                return
            node.fenced.extend(node.store.lost([exec_id]))
            self._drop_fenced(node)
            if exec_id not in node.mine:
                return
        assert node.store.epoch is not None
        body = Body(exec_id, TASKS[node.mine[exec_id]], node.name, node.store.epoch, self.clock.now)
        node.running[exec_id] = body
        self.bodies.append(body)

    def _end(self, node: Node) -> None:
        assert node.store is not None
        if not node.running:
            return
        exec_id = self.rng.choice(sorted(node.running))
        body = node.running.pop(exec_id)
        body.end = self.clock.now
        record = TaskRecord(exec_id, body.task, None, "finished", None, None, "{}")
        index = TASKS.index(body.task)
        records: list[Any] = [record]
        if index == len(TASKS) - 1:
            records.append(ExecutionRecord(exec_id, "sim", "finished", None, "2026-01-01T00:00:01+00:00"))
        node.store.write(records)
        if exec_id in node.fenced:
            self._drop_fenced(node)
            return
        self._drop_fenced(node)
        body.committed = True
        key = (exec_id, body.task)
        self.commits.setdefault(key, self.clock.now)
        node.mine[exec_id] = index + 1
        if index == len(TASKS) - 1:
            node.mine.pop(exec_id, None)

    # -- faults ----------------------------------------------------------------------------------
    def _fault(self) -> None:
        node = self.rng.choice(self.nodes)
        kind = self.rng.choice(["pause", "crash", "restart"])
        if kind == "pause" and node.up:
            node.paused_until = self.clock.now + self.rng.uniform(0.5, 3 * LEASE)
            for body in node.running.values():
                body.faulted = True
        elif kind == "crash" and node.store is not None:
            for body in node.running.values():
                body.faulted = True
                body.end = self.clock.now  # its process is gone: the body ends with it
            node.running.clear()
            node.mine.clear()
            node.store.close()
            node.store = None
        elif kind == "restart" and node.store is None:
            self._boot(node)

    # -- running ---------------------------------------------------------------------------------
    def _act(self, node: Node, faults: bool) -> None:
        if node.store is None or node.replaced:
            return
        if node.paused_until is not None:
            if self.clock.now < node.paused_until:
                return
            node.paused_until = None  # back: its loop runs on, its heartbeat thread beats soon
        if self.clock.now - node.last_beat >= LEASE / 3:  # the heartbeat's own schedule (its own thread)
            self._beat(node)
            if node.replaced:
                return
        action = self.rng.choices(
            ["beat", "claim", "trigger", "start", "end"], weights=[3, 2, 2 if faults else 0, 4, 4]
        )[0]
        getattr(self, f"_{action}")(node)

    def run(self) -> None:
        """The faulty part, then the quiet part: restart the crashed, let the nodes finish."""
        for _ in range(self.steps):
            self.clock.now += self.rng.uniform(0.0, 1.5)
            if self.rng.random() < 0.08:
                self._fault()
            for node in self.rng.sample(self.nodes, len(self.nodes)):
                self._act(node, faults=True)
        for node in self.nodes:
            if node.store is None:
                self._boot(node)
            node.paused_until = None
        for _ in range(2000):
            if self._all_finished():
                return
            self.clock.now += self.rng.uniform(0.0, 1.5)
            for node in self.nodes:
                if node.store is not None and not node.replaced:
                    if self.clock.now - node.last_beat >= LEASE / 3 or self.rng.random() < 0.5:
                        self._beat(node)
                    self._claim(node)
                    self._start(node)
                    self._end(node)

    def _all_finished(self) -> bool:
        store = next(n.store for n in self.nodes if n.store is not None)
        assert store is not None
        return all(info.finished for info in store.executions(template_id="sim"))

    def close(self) -> None:
        for node in self.nodes:
            if node.store is not None:
                node.store.close()
                node.store = None

    # -- the promises -----------------------------------------------------------------------------
    def check(self) -> list[str]:
        """The broken promises (empty: none)."""
        problems: list[str] = []
        by_task: dict[tuple[str, str], list[Body]] = {}
        for body in self.bodies:
            by_task.setdefault((body.exec_id, body.task), []).append(body)
        for key, bodies in by_task.items():
            committed = self.commits.get(key)
            if committed is not None:
                late = [b for b in bodies if b.start > committed]
                if late:
                    problems.append(f"{key}: started at {late[0].start:.2f} after its end was committed at {committed}")
            if sum(b.committed for b in bodies) > 1:
                problems.append(f"{key}: its end was committed {sum(b.committed for b in bodies)} times")
            for i, a in enumerate(bodies):
                for b in bodies[i + 1 :]:
                    a_end = a.end if a.end is not None else float("inf")
                    b_end = b.end if b.end is not None else float("inf")
                    overlap = a.start < b_end and b.start < a_end
                    if overlap and not a.faulted and not b.faulted and (a.node, a.epoch) != (b.node, b.epoch):
                        problems.append(f"{key}: bodies on healthy {a.node} and {b.node} overlapped")
        if not self._all_finished():
            store = next(n.store for n in self.nodes if n.store is not None)
            assert store is not None
            left = [i.exec_id for i in store.executions(template_id="sim") if not i.finished]
            problems.append(f"{len(left)} execution(s) never finished: {left[:5]}")
        return problems


def simulate(path: Path, seed: int, steps: int = 120) -> tuple[list[str], dict[str, int]]:
    """Run one seed; return the broken promises and what the run did."""
    sim = Simulation(path, seed, steps=steps)
    try:
        sim.run()
        problems = sim.check()
    finally:
        sim.close()
    stats = {
        "executions": len(sim.executions),
        "bodies": len(sim.bodies),
        "faulted": sum(b.faulted for b in sim.bodies),
        "twice": sum(
            1
            for key in {(b.exec_id, b.task) for b in sim.bodies}
            if sum(1 for b in sim.bodies if (b.exec_id, b.task) == key) > 1
        ),
    }
    return problems, stats
