"""The fault-injection suite (issue 19): engine processes under faults, then the checker.

Small seeds run here (select them with ``-m chaos``; they run by default);
`benchmarks/chaos.py` runs many seeds of each fault kind. The checker's
own tests come first: each invariant is broken on purpose, and named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chaos_check import Faults, Journal, Window, check, read_runs
from chaos_harness import Scenario, run
from pg import need_postgres


def start(run_id: str, task: str, t: float, inputs: Any = None, exec_id: str = "x", pid: int = 1) -> dict[str, Any]:
    node = run_id.split("/")[0]
    return {
        "k": "start",
        "exec": exec_id,
        "task": task,
        "run": run_id,
        "node": node,
        "pid": pid,
        "t": t,
        "inputs": inputs,
    }


def end(run_id: str, t: float) -> dict[str, Any]:
    return {"k": "end", "run": run_id, "t": t, "outputs": {"run": run_id}}


def journal_of(outputs: dict[tuple[str, str], str], states: dict[str, str] | None = None) -> Journal:
    return Journal(
        templates={},
        states=states or {"x": "finished"},
        outputs={key: {"run": run_id} for key, run_id in outputs.items()},
    )


def violations(lines: list[dict[str, Any]], journal: Journal, faults: Faults | None = None) -> list[str]:
    runs, others = read_runs(lines, {})
    return check(runs, others, journal, faults or Faults())


# -- the checker ------------------------------------------------------------------------------
def test_a_clean_history_has_no_violation() -> None:
    lines = [start("n0/1", "a", 0.0, {"n": 1}), end("n0/1", 1.0), start("n1/2", "b", 1.5, {"run": "n0/1"}, pid=2)]
    lines.append(end("n1/2", 2.0))
    lines.append({"k": "ack", "exec": "x", "template": "chaos-dag", "node": "n0", "pid": 1, "t": 0.0})
    assert violations(lines, journal_of({("x", "a"): "n0/1", ("x", "b"): "n1/2"})) == []


def test_an_acknowledged_execution_that_never_ends_is_named() -> None:
    acks = [{"k": "ack", "exec": e, "template": "chaos-dag", "node": "n0", "pid": 1, "t": 0.0} for e in "xy"]
    found = violations(acks, journal_of({}, {"x": "pending"}))
    assert found == ["ends: acknowledged execution y is not in the journal", "ends: execution x is pending"]


def test_a_committed_task_that_runs_again_is_named() -> None:
    lines = [start("n0/1", "a", 0.0), end("n0/1", 1.0), start("n1/2", "a", 1.2, pid=2), end("n1/2", 1.3)]
    found = violations(lines, journal_of({("x", "a"): "n0/1"}))
    assert found == ["ran again: x task a ended on n0 (committed) at 1.000, started again on n1 at 1.200"]


def test_a_body_on_two_healthy_nodes_at_once_is_named_unless_one_was_faulted() -> None:
    lines = [start("n0/1", "a", 0.0), end("n0/1", 1.0), start("n1/2", "a", 0.5, pid=2), end("n1/2", 1.5)]
    journal = journal_of({("x", "a"): "n1/2"})
    assert violations(lines, journal) == ["twice at once: x task a on n0 and n1 for 0.500s from 0.500"]
    assert violations(lines, journal, Faults(windows=[Window("n0", 0.2, 0.6)])) == []
    assert violations(lines, journal, Faults(killed={1})) == []
    assert violations(lines, journal, Faults(windows=[Window("n2", 0.0, 2.0)])) != []


def test_a_run_of_a_killed_process_ends_when_it_died() -> None:
    runs, _ = read_runs([start("n0/1", "a", 0.0)], {1: 0.7})
    assert [(r.start, r.end) for r in runs] == [(0.0, 0.7)]


def test_a_successor_given_other_than_its_parents_committed_outputs_is_named() -> None:
    lines = [start("n0/1", "a", 0.0), end("n0/1", 0.1), start("n0/2", "b", 0.2, {"run": "n0/9"}), end("n0/2", 0.3)]
    found = violations(lines, journal_of({("x", "a"): "n0/1", ("x", "b"): "n0/2"}))
    assert found == ["inputs: x task b on n0 got {'run': 'n0/9'}, parents committed {'run': 'n0/1'}"]
    join = [start("n0/3", "d", 0.4, [{"run": "b"}, {"run": "c"}]), end("n0/3", 0.5)]
    assert violations(join, journal_of({("x", "b"): "b", ("x", "c"): "c", ("x", "d"): "n0/3"})) == []


def test_more_limited_executions_at_once_than_the_limit_are_named() -> None:
    lines = [start(f"n{i}/{i}", "q", 0.1 * i, exec_id=f"q{i}", pid=i) for i in range(3)]
    lines += [end(f"n{i}/{i}", 1.0 + 0.1 * i) for i in range(3)]
    states = {f"q{i}": "finished" for i in range(3)}
    found = violations(lines, journal_of({}, states))
    assert found == ["limit: 3 executions of chaos-limit ran at once at 0.200: ['q0', 'q1', 'q2']"]
    # One of them on a node faulted then (its execution was taken over): two at once is the limit.
    assert violations(lines, journal_of({}, states), Faults(windows=[Window("n2", 0.0, 2.0)])) == []
    # Two runs of one execution (a takeover) hold one slot.
    again = [start("n0/1", "q", 0.0, exec_id="q0"), start("n1/2", "q", 0.1, exec_id="q0", pid=2)]
    again += [start("n2/3", "q", 0.2, exec_id="q1", pid=3), end("n0/1", 1.0), end("n1/2", 1.0), end("n2/3", 1.0)]
    assert [f for f in violations(again, journal_of({}, {"q0": "finished", "q1": "finished"})) if "limit" in f] == []


def test_two_skip_instances_at_once_are_named() -> None:
    lines = [start("n0/1", "s", 0.0, exec_id="p"), end("n0/1", 1.0)]
    lines += [start("n1/2", "s", 0.9, exec_id="q", pid=2), end("n1/2", 2.0)]
    found = violations(lines, journal_of({("p", "s"): "n0/1", ("q", "s"): "n1/2"}, {"p": "finished", "q": "finished"}))
    assert found == ["skip: instances p (n0) and q (n1) ran together for 0.100s"]


def test_an_event_lost_or_received_twice_by_a_healthy_listener_is_named() -> None:
    others = [{"k": "ack", "exec": "x", "template": "chaos-listen", "node": "n0", "pid": 1, "t": 0.0}]
    others += [{"k": "published", "e": e, "node": "n1", "pid": 2, "t": 0.1} for e in ("e1", "e2", "stop/0/1")]
    journal = Journal({}, {"x": "finished"}, {("x", "l"): {"run": "n0/1", "got": ["e1", "e1"]}})
    found = check([], others, journal, Faults())
    assert found == ["events: listener x got e1 2 times", "events: listener x (n0) missed 1: ['e2']"]
    assert check([], others, journal, Faults(cut_off={"n0"})) == ["events: listener x got e1 2 times"]


def test_a_scenario_names_what_it_cannot_run() -> None:
    with pytest.raises(ValueError, match="store must be 'pg' or 'sqlite', got 'mysql'"):
        Scenario("mysql", "kill", 1)
    with pytest.raises(ValueError, match="fault must be one of"):
        Scenario("pg", "flood", 1)
    with pytest.raises(ValueError, match="fault 'conn' needs PostgreSQL"):
        Scenario("sqlite", "conn", 1)


# -- the suite: small seeds ------------------------------------------------------------------------
CI_SCENARIOS = [
    pytest.param("pg", "kill", 1, id="pg-kill"),
    pytest.param("sqlite", "stop", 1, id="sqlite-stop"),
    pytest.param("pg", "conn", 1, id="pg-conn"),
    pytest.param("pg", "proxy", 1, id="pg-proxy"),
    pytest.param("pg", "restart", 1, id="pg-restart"),
    pytest.param("sqlite", "clock", 1, id="sqlite-clock"),
]


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.parametrize(("store", "fault", "seed"), CI_SCENARIOS)
def test_no_invariant_breaks_under_faults(store: str, fault: str, seed: int, tmp_path: Path) -> None:
    dsn = need_postgres() if store == "pg" else None
    outcome = run(Scenario(store, fault, seed, feed=1.5), tmp_path, dsn)
    assert outcome.executions > 10  # the run did work
    assert outcome.runs > 30
    assert outcome.events > 0
    assert fault == "clock" or outcome.faults > 0
    assert outcome.violations == []
