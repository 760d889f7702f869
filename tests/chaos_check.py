"""The invariants the fault suite checks once the faults have stopped (see chaos_harness.py).

Input: the run logs of every worker process (chaos_worker.py), the journal
as the store reads it back (execution id -> template, state, and each
task's committed outputs), and the fault windows (node, start, end) on the
shared boot clock. Output: the violations, one line each.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: The parents of each task of the DAG (chaos_worker.DAG).
PARENTS = {"b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["d"]}
#: The most executions of the 'chaos-limit' template (its "concurrency") that may run at once.
LIMIT = 2


@dataclass
class Run:
    """One run of a task body, as its process recorded it."""

    exec_id: str
    task: str
    run: str
    node: str
    pid: int
    start: float
    inputs: Any
    end: float | None = None
    outputs: Any = None


@dataclass
class Journal:
    """What the store kept: template and state of each execution, committed outputs of each task."""

    templates: dict[str, str] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    outputs: dict[tuple[str, str], Any] = field(default_factory=dict)


@dataclass
class Window:
    """A time a node (None: every node) was faulted: its runs then may overlap others'."""

    node: str | None
    start: float
    end: float


@dataclass
class Faults:
    """What the harness did: fault windows, the nodes cut off (every node, when the database
    restarted for longer than the leases allow: an event published meanwhile may never be
    kept), and the processes killed.

    A node killed, paused or cut from the database is not cut off: its listening tasks are
    taken over, and get the events they missed (see `tukio.store._catchup`)."""

    windows: list[Window] = field(default_factory=list)
    cut_off: set[str] = field(default_factory=set)
    killed: set[int] = field(default_factory=set)

    def exempt(self, run: Run, start: float, end: float) -> bool:
        """Whether `run` may misbehave between `start` and `end`: its node was faulted then, or its process killed."""
        return run.pid in self.killed or any(
            (w.node is None or w.node == run.node) and w.start < end and start < w.end for w in self.windows
        )


def read_runs(lines: Iterable[dict[str, Any]], deaths: dict[int, float]) -> tuple[list[Run], list[dict[str, Any]]]:
    """The runs of the task bodies, and the other records (acks, publications, events received).

    A run with no end ends when its process died (`deaths`: pid -> time), if it did.
    """
    runs: dict[str, Run] = {}
    others: list[dict[str, Any]] = []
    for r in lines:
        if r["k"] == "start":
            runs[r["run"]] = Run(r["exec"], r["task"], r["run"], r["node"], r["pid"], r["t"], r["inputs"])
        elif r["k"] == "end":
            runs[r["run"]].end, runs[r["run"]].outputs = r["t"], r["outputs"]
        elif r["k"] == "stopped":
            runs[r["run"]].end = r["t"]
        else:
            others.append(r)
    for run in runs.values():
        if run.end is None and run.pid in deaths:
            run.end = deaths[run.pid]
    return list(runs.values()), others


def _overlap(one: Run, two: Run, horizon: float) -> tuple[float, float] | None:
    start, end = max(one.start, two.start), min(one.end or horizon, two.end or horizon)
    return (start, end) if start < end else None


def check(runs: list[Run], others: list[dict[str, Any]], journal: Journal, faults: Faults) -> list[str]:
    """Every violation of the suite's invariants, one line each (empty: none)."""
    horizon = max([r.end or r.start for r in runs], default=0.0) + 1.0
    by_task: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        by_task[run.exec_id, run.task].append(run)
    found: list[str] = []
    found += _every_execution_ends(others, journal)
    found += _committed_tasks_never_run_again(by_task, journal)
    found += _no_body_on_two_healthy_nodes(by_task, faults, horizon)
    found += _successors_get_committed_outputs(by_task, journal, faults, horizon)
    found += _one_skip_instance(runs, faults, horizon)
    found += _limit_holds(runs, faults, horizon)
    found += _events_reach_listeners_once(others, journal, faults.cut_off)
    return found


def _every_execution_ends(others: list[dict[str, Any]], journal: Journal) -> list[str]:
    acked = {r["exec"] for r in others if r["k"] == "ack" and r["exec"] is not None}
    found = [f"ends: acknowledged execution {e} is not in the journal" for e in sorted(acked - set(journal.states))]
    found += [
        f"ends: execution {e} is {s}"
        for e, s in sorted(journal.states.items())
        if s in ("pending", "unfinished", "queued")
    ]
    return found


def _committed_tasks_never_run_again(by_task: dict[tuple[str, str], list[Run]], journal: Journal) -> list[str]:
    found = []
    for key, runs in by_task.items():
        committed = journal.outputs.get(key)
        owner = next((r for r in runs if committed is not None and r.run == committed.get("run")), None)
        if owner is None or owner.end is None:
            continue
        for other in runs:
            if other is not owner and other.start > owner.end:
                found.append(
                    f"ran again: {key[0]} task {key[1]} ended on {owner.node} (committed) at {owner.end:.3f}, "
                    f"started again on {other.node} at {other.start:.3f}"
                )
    return found


def _no_body_on_two_healthy_nodes(
    by_task: dict[tuple[str, str], list[Run]], faults: Faults, horizon: float
) -> list[str]:
    found = []
    for key, runs in by_task.items():
        for one, two in itertools.combinations(runs, 2):
            both = _overlap(one, two, horizon)
            if one.pid == two.pid or both is None:
                continue
            if not faults.exempt(one, *both) and not faults.exempt(two, *both):
                found.append(
                    f"twice at once: {key[0]} task {key[1]} on {one.node} and {two.node} "
                    f"for {both[1] - both[0]:.3f}s from {both[0]:.3f}"
                )
    return found


def _successors_get_committed_outputs(
    by_task: dict[tuple[str, str], list[Run]], journal: Journal, faults: Faults, horizon: float
) -> list[str]:
    """The committed run of a successor, and every run on a healthy node, got its parents' committed outputs.

    (A run on a node lost meanwhile may have started on a parent's output
    that its node never committed: it is in flight, at least once.)
    """
    found = []
    for (exec_id, task), runs in by_task.items():
        parents = PARENTS.get(task)
        if parents is None:
            continue
        wanted = [journal.outputs.get((exec_id, p)) for p in parents]
        expected: Any = wanted[0] if len(wanted) == 1 else wanted
        committed = (journal.outputs.get((exec_id, task)) or {}).get("run")
        found += [
            f"inputs: {exec_id} task {task} on {run.node} got {run.inputs}, parents committed {expected}"
            for run in runs
            if run.inputs != expected
            and (run.run == committed or not faults.exempt(run, run.start, run.end or horizon))
        ]
    return found


def _one_skip_instance(runs: list[Run], faults: Faults, horizon: float) -> list[str]:
    skips = [r for r in runs if r.task == "s"]
    found = []
    for one, two in itertools.combinations(skips, 2):
        both = _overlap(one, two, horizon)
        if one.exec_id == two.exec_id or both is None:
            continue
        if not faults.exempt(one, *both) and not faults.exempt(two, *both):
            found.append(
                f"skip: instances {one.exec_id} ({one.node}) and {two.exec_id} ({two.node}) "
                f"ran together for {both[1] - both[0]:.3f}s"
            )
    return found


def _limit_holds(runs: list[Run], faults: Faults, horizon: float) -> list[str]:
    """At no instant did more than `LIMIT` executions of 'chaos-limit' run on healthy nodes."""
    healthy = [r for r in runs if r.task == "q" and not faults.exempt(r, r.start, r.end or horizon)]
    moments = sorted([(r.start, 1, r.exec_id) for r in healthy] + [(r.end or horizon, -1, r.exec_id) for r in healthy])
    running: dict[str, int] = defaultdict(int)
    found = []
    for at, step, exec_id in moments:  # (an end sorts before a start at the same instant)
        running[exec_id] += step
        if running[exec_id] == 0:
            del running[exec_id]
        if len(running) > LIMIT:
            found.append(f"limit: {len(running)} executions of chaos-limit ran at once at {at:.3f}: {sorted(running)}")
    return found


def _events_reach_listeners_once(others: list[dict[str, Any]], journal: Journal, cut_off: set[str]) -> list[str]:
    """Each listener got each acknowledged event once (none twice, anywhere), unless every node was cut off."""
    published = {r["e"] for r in others if r["k"] == "published" and not r["e"].startswith("stop/")}
    started = {r["exec"]: r["node"] for r in others if r["k"] == "ack" and r["template"] == "chaos-listen"}
    found = []
    for exec_id, node in sorted(started.items()):
        outputs = journal.outputs.get((exec_id, "l"))
        if outputs is None:
            found.append(f"events: listener {exec_id} ({node}) never ended")
            continue
        counts = Counter(outputs["got"])
        found += [f"events: listener {exec_id} got {e} {n} times" for e, n in sorted(counts.items()) if n > 1]
        if node not in cut_off:
            missing = sorted(published - set(counts))
            if missing:
                found.append(f"events: listener {exec_id} ({node}) missed {len(missing)}: {missing[:10]}")
    return found
