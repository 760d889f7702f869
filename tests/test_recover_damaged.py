"""A damaged journal row is reported alone: recovery resumes every healthy execution."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from support import template

from tukio import Engine, Event, WorkflowTemplate
from tukio.cli import main as cli_main
from tukio.errors import DamagedRecordError
from tukio.store import MemoryStore, SQLiteStore, Store
from tukio.store.base import ExecutionRecord, Record, TaskRecord

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc).isoformat()
A_DONE = '{"inputs":{"n":1},"outputs":{"n":1,"a":true}}'

# Each damaged execution: what to change in its records, and what its reason must say.
DAMAGE: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "task-data-not-json": ({}, {"data": "{not json"}, "task a: data cannot be read: JSONDecodeError"),
    "task-data-a-list": ({}, {"data": "[1,2]"}, "task a: data must be an object, got list"),
    "task-data-null": ({}, {"data": None}, "task a: data cannot be read"),
    "template-not-utf8": ({"template": b"\xff\x00{"}, {}, "template cannot be read: UnicodeDecodeError"),
    "template-a-list": ({"template": "[1,2]"}, {}, "template must be an object, got list"),
    "template-tasks-not-list": ({"template": '{"id":"t","tasks":3}'}, {}, "template: 'tasks' must be a list"),
    "template-missing": ({"template": None}, {}, "no template"),
    "event-not-json": ({"event": "{nope"}, {}, "triggering data cannot be read"),
    "attempts-not-list": ({}, {"data": '{"attempts":3}'}, "task a: attempts must be a list of objects"),
    "attempt-time-bad": ({}, {"data": '{"attempts":[{"start":"noon"}]}'}, "task a: attempt 1: start"),
    "task-time-bad": ({}, {"start": "yesterday"}, "task a: start is not an ISO time: 'yesterday'"),
    "exec-time-bad": ({"start": "soon"}, {}, "start is not an ISO time: 'soon'"),
}


@pytest.fixture
def chain(registered: Callable[..., Any], task_name: Callable[[str], str]) -> WorkflowTemplate:
    name = task_name("damaged")

    async def step(event: Event) -> dict[str, Any]:
        return {**event.data, "step": True}

    registered(name, step)
    return template([("a", name), ("b", name)], {"a": ["b"]}, id="chain")


def _records(tmpl: WorkflowTemplate, exec_id: str, execution: dict[str, Any], task: dict[str, Any]) -> list[Record]:
    """An execution interrupted after its task a finished, with some fields replaced."""
    fields: dict[str, Any] = {"template": json.dumps(tmpl.as_dict()), "event": '{"n":1}', "start": NOW}
    fields.update(execution)
    task_fields: dict[str, Any] = {"state": "finished", "start": NOW, "data": A_DONE}
    task_fields.update(task)
    return [
        ExecutionRecord(
            exec_id, tmpl.uid, "pending", fields["start"], template=fields["template"], event=fields["event"]
        ),
        TaskRecord(exec_id, "a", f"{exec_id}-a", task_fields["state"], task_fields["start"], NOW, task_fields["data"]),
    ]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "damaged.db")
    with made:
        yield made


HEALTHY = ["healthy-1", "healthy-2", "healthy-3"]


def _fill(store: Store, tmpl: WorkflowTemplate) -> None:
    # Interleave healthy and damaged rows, so that a recovery stopping early is caught.
    ids = sorted([*HEALTHY, *DAMAGE])
    for exec_id in ids:
        execution, task, _ = DAMAGE.get(exec_id, ({}, {}, ""))
        store.write(_records(tmpl, exec_id, execution, task))


async def test_recover_resumes_the_healthy_and_lists_the_damaged(store: Store, chain: WorkflowTemplate) -> None:
    _fill(store, chain)
    engine = Engine(store=store)
    await engine.load(chain)
    resumed = await engine.recover()
    assert sorted(wf.uid for wf in resumed) == HEALTHY
    await asyncio.wait_for(asyncio.gather(*resumed), 5)
    for wf in resumed:
        assert wf.tasks_by_id["b"].result() == {"n": 1, "a": True, "step": True}
    reasons = {info.exec_id: info.problem for info in engine.unrecovered}
    assert sorted(reasons) == sorted(DAMAGE)
    for exec_id, (_, _, expected) in DAMAGE.items():
        assert expected in str(reasons[exec_id]), (exec_id, reasons[exec_id])
    await engine.stop()
    # The damaged ones are kept (for a person to look at); the healthy ones ended.
    assert sorted(i.exec_id for i in store.unfinished()) == sorted(DAMAGE)
    assert {store.load(uid)["exec"]["state"] for uid in HEALTHY} == {"finished"}


@pytest.mark.parametrize("exec_id", sorted(set(DAMAGE) - {"exec-time-bad", "template-missing"}))
def test_load_names_the_execution_and_the_field(store: Store, chain: WorkflowTemplate, exec_id: str) -> None:
    execution, task, expected = DAMAGE[exec_id]
    store.write(_records(chain, exec_id, execution, task))
    with pytest.raises(DamagedRecordError, match=f"^execution {exec_id}: ") as caught:
        store.load(exec_id)
    assert expected in str(caught.value)
    assert caught.value.exec_id == exec_id


def test_executions_lists_a_row_with_bad_times(store: Store, chain: WorkflowTemplate) -> None:
    store.write(_records(chain, "bad", {"start": "soon"}, {}))
    [info] = store.executions()
    assert info.start is None
    assert info.problem == "start is not an ISO time: 'soon'"


async def test_a_store_failing_on_one_load_does_not_stop_the_others(chain: WorkflowTemplate) -> None:
    class Flaky(MemoryStore):
        def load(self, exec_id: str) -> dict[str, Any]:
            if exec_id == "healthy-2":
                raise OSError("disk went away")
            return super().load(exec_id)

    store = Flaky()
    for exec_id in HEALTHY:
        store.write(_records(chain, exec_id, {}, {}))
    engine = Engine(store=store)
    await engine.load(chain)
    resumed = await engine.recover()
    assert sorted(wf.uid for wf in resumed) == ["healthy-1", "healthy-3"]
    [left] = engine.unrecovered
    assert (left.exec_id, left.problem) == ("healthy-2", "OSError: disk went away")
    await asyncio.wait_for(asyncio.gather(*resumed), 5)
    await engine.stop()


async def test_an_unloaded_template_is_the_reason(store: Store, chain: WorkflowTemplate) -> None:
    store.write(_records(chain, "later", {}, {}))
    engine = Engine(store=store)
    assert await engine.recover() == []
    [left] = engine.unrecovered
    assert left.problem == "template chain is not loaded"
    await engine.stop()


def _damage_sqlite(path: Path, sql: str, *params: Any) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(sql, params)
    finally:
        db.close()


@pytest.fixture
def damaged_db(tmp_path: Path, chain: WorkflowTemplate) -> Path:
    """A database with rows that are not UTF-8 text where SQLite says they are."""
    path = tmp_path / "text.db"
    with SQLiteStore(path) as store:
        for exec_id in [*HEALTHY, "text-template", "text-state", "text-id"]:
            store.write(_records(chain, exec_id, {}, {}))
    _damage_sqlite(path, "UPDATE executions SET template = CAST(X'FF7B' AS TEXT) WHERE exec_id = 'text-template'")
    _damage_sqlite(path, "UPDATE executions SET started = X'00' WHERE exec_id = 'text-state'")
    _damage_sqlite(path, "UPDATE executions SET template_id = CAST(X'63FF' AS TEXT) WHERE exec_id = 'text-id'")
    _damage_sqlite(path, "UPDATE tasks SET data = CAST(X'7BFF' AS TEXT) WHERE exec_id = 'healthy-3'")
    return path


async def test_sqlite_text_that_is_not_utf8(damaged_db: Path, chain: WorkflowTemplate) -> None:
    with SQLiteStore(damaged_db) as store:
        infos = {i.exec_id: i for i in store.executions()}
        assert infos["text-state"].problem == "start is not an ISO time: b'\\x00'"
        assert infos["text-id"].problem == "template_id is not text: b'c\\xff'"
        assert infos["text-id"].template_id == "c\ufffd"
        with pytest.raises(DamagedRecordError, match=r"^execution text-template: template cannot be read"):
            store.load("text-template")
        engine = Engine(store=store)
        await engine.load(chain)
        resumed = await engine.recover()
        assert sorted(wf.uid for wf in resumed) == ["healthy-1", "healthy-2"]
        assert sorted(i.exec_id for i in engine.unrecovered) == ["healthy-3", "text-id", "text-state", "text-template"]
        await asyncio.wait_for(asyncio.gather(*resumed), 5)
        await engine.stop()


def test_inspect_shows_damaged_rows_without_a_traceback(damaged_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["inspect", "--store", str(damaged_db)]) == 0
    out = capsys.readouterr().out
    assert "text-state" in out
    assert out.splitlines()[-1] == "damaged: text-state: start is not an ISO time: b'\\x00'"
    assert cli_main(["inspect", "--store", str(damaged_db), "text-template"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tukio: error: {damaged_db}: execution text-template: template cannot be read")
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1
