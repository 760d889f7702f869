"""The ownership core's steps, without a database: how many statements each dialect sends.

The steps run against real databases in `test_leased_stores.py` (SQLite and
PostgreSQL); here, what a step costs in round trips, which the fault suite
showed matters: a heartbeat of several round trips, behind a slow network,
renewed the lease too late and the node was taken for dead.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from tukio.store import _ownsql as own
from tukio.store._flowsql import Statement
from tukio.store.postgres import _ONE_STATEMENT

PG = own.POSTGRES_OWNING('"s"')


def statements(step: Generator[Statement, Any, Any], answers: list[Any]) -> list[Statement]:
    """The statements `step` sends, given each one's rows in turn (then empty rows)."""
    sent = [next(step)]
    try:
        for rows in [*answers, *([[]] * 100)]:
            sent.append(step.send(rows))
    except StopIteration:
        pass
    return sent


def test_a_postgresql_heartbeat_is_one_statement_and_says_late_or_replaced() -> None:
    sent = statements(own.heartbeat(PG, "a", 3, 5.0), [])
    assert len(sent) == 1
    assert sent[0].sql.startswith('WITH was AS (SELECT expires FROM "s".nodes')
    assert sent[0].params == ("a", 3, 5.0, "a", 3)
    for rows, beat in (([(True,)], "alive"), ([(False,)], "late"), ([], "replaced")):
        step = own.heartbeat(PG, "a", 3, 5.0)
        next(step)
        with pytest.raises(StopIteration) as stop:
            step.send(rows)
        assert stop.value.value == beat


def test_a_sqlite_heartbeat_reads_then_renews_unless_replaced() -> None:
    assert len(statements(own.heartbeat(own.SQLITE_OWNING, "a", 3, 5.0), [[(1,)]])) == 2
    assert len(statements(own.heartbeat(own.SQLITE_OWNING, "a", 3, 5.0), [[]])) == 1  # replaced: nothing renewed


def test_ids_go_as_one_array_on_postgresql_and_in_chunks_on_sqlite() -> None:
    ids = [f"e{i}" for i in range(1200)]
    assert len(statements(own.mark_cancelled(PG, "a", 1, ids, None), [])) == 1
    assert len(statements(own.unlock(PG, "a", 1, ids), [])) == 1
    assert len(statements(own.lost(PG, "a", 1, ids), [])) == 1
    assert len(statements(own.mark_cancelled(own.SQLITE_OWNING, "a", 1, ids, None), [])) == 3
    assert [len(s.params) for s in statements(own.unlock(own.SQLITE_OWNING, "a", 1, ids), [])] == [503, 503, 203]


def test_a_claim_probe_reads_one_row_and_takes_nothing() -> None:
    [probe] = statements(own.claim(PG, "a", 1, ["t"], 100, None, probe=True), [[("e1",)]])
    assert "FOR UPDATE" not in probe.sql
    assert probe.params[-1] == 1
    sent = statements(own.claim(PG, "a", 1, ["t"], 100, ["v1"]), [[("e1", "t", "pending", None, None, None, "v1")]])
    assert sent[0].sql.endswith("FOR UPDATE SKIP LOCKED")
    assert sent[1].sql.startswith('UPDATE "s".executions SET owner = ?, epoch = ? WHERE exec_id = ANY(?)')
    assert sent[1].params == ["a", 1, ["e1"]]


def test_the_steps_postgresql_runs_without_a_transaction_are_one_statement_there() -> None:
    ids = [f"e{i}" for i in range(1200)]
    made = {
        own.heartbeat: own.heartbeat(PG, "a", 1, 5.0),
        own.mark_cancelled: own.mark_cancelled(PG, "a", 1, ids, None),
        own.unlock: own.unlock(PG, "a", 1, ids),
        own.leave: own.leave(PG, "a", 1),
    }
    assert set(made) == _ONE_STATEMENT
    for step in made.values():
        assert len(statements(step, [[(True,)]])) == 1
    # Those it wraps in one do take several (a claim reads, then takes).
    assert (
        len(statements(own.claim(PG, "a", 1, ["t"], 100, None), [[("e1", "t", "pending", None, None, None, None)]])) > 1
    )
