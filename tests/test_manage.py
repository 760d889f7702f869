"""`tukio.manage`: listing and inspecting executions, on every store, with a real engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from support import chain
from support import run_to_end as run

from tukio import Engine
from tukio._report import iso
from tukio.manage import ExecutionDetail, Manager, UnknownExecution
from tukio.store import MemoryStore, SQLiteStore
from tukio.store.base import ExecutionRecord, Store, TaskRecord

STORES = ["memory", "sqlite", "postgres"]


def open_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    """A new empty store of `kind` (PostgreSQL: a schema of the test's own)."""
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "journal.db")
    from tukio.store import PostgresStore

    dsn, schema = request.getfixturevalue("pg_schema")
    return PostgresStore(dsn, schema=schema)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(request.param, tmp_path, request)
    yield opened
    opened.close()


@pytest.fixture
def tasks(registered: Callable[..., Any], task_name: Callable[[str], str]) -> dict[str, str]:
    """Registered task names: 'double' (outputs twice its input's 'n'), 'boom' (raises)."""

    async def double(event: Any) -> dict[str, int]:
        return {"n": event.data["n"] * 2}

    async def boom(event: Any) -> None:
        raise ValueError("boom")

    names = {"double": task_name("double"), "boom": task_name("boom")}
    registered(names["double"], double)
    registered(names["boom"], boom)
    return names


@pytest.fixture
async def engine_on(store: Store) -> AsyncIterator[Engine]:
    engine = Engine(store=store, lease=0.3)
    yield engine
    await asyncio.wait_for(engine.stop(force=True), 10)


async def test_list_and_get_what_an_engine_ran(engine_on: Engine, store: Store, tasks: dict[str, str]) -> None:
    good = await run(engine_on, chain("good", tasks["double"], tasks["double"]), 3)
    bad = await run(engine_on, chain("bad", tasks["boom"], tasks["double"]))
    manager = Manager(store)

    page = await manager.list()
    assert [i.id for i in page.items] == [bad, good]  # newest first
    assert page.next is None
    by_id = {i.id: i for i in page.items}
    assert (by_id[good].state, by_id[good].failed, by_id[good].error) == ("finished", False, None)
    # The root raised: the workflow's state is unchanged (1.1.2's report), the failure is visible.
    assert by_id[bad].failed is True
    assert by_id[bad].error is not None
    assert "t1" in by_id[bad].error
    assert "boom" in by_id[bad].error
    assert [i.id for i in (await manager.list(failed=True)).items] == [bad]
    assert [i.id for i in (await manager.list(failed=False)).items] == [good]
    assert [i.id for i in (await manager.list(template="good")).items] == [good]
    assert (await manager.list(state="pending")).items == []
    # 'exception' finds the workflow whose task raised too (its own state is 'finished').
    assert [i.id for i in (await manager.list(state="exception")).items] == [bad]
    assert [i.id for i in (await manager.list(state=["timeout", "cancelled"])).items] == []

    detail = await manager.get(good)
    assert isinstance(detail, ExecutionDetail)
    assert detail.graph == {"t1": ["t2"], "t2": []}
    assert [(t.id, t.state, t.inputs, t.outputs, t.attempts) for t in detail.tasks] == [
        ("t1", "finished", {"n": 3}, {"n": 6}, 1),
        ("t2", "finished", {"n": 6}, {"n": 12}, 1),
    ]
    failed = await manager.get(bad)
    assert failed.tasks[0].state == "exception"
    assert "boom" in (failed.tasks[0].error or "")
    assert (failed.tasks[1].state, failed.tasks[1].attempts) == (None, 0)
    document = json.loads(json.dumps(detail.as_dict()))
    assert (document["id"], document["tasks"][1]["outputs"]) == (good, {"n": 12})
    assert document["start"] == detail.start.isoformat()  # type: ignore[union-attr]


def journal(store: Store, count: int, template_id: str = "t") -> list[str]:
    """Write `count` finished executions, one second apart; return their ids, oldest first."""
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ids = [f"exec-{i:04}" for i in range(count)]
    store.write(
        [
            ExecutionRecord(i, template_id, "finished", iso(base + timedelta(seconds=n)), None, template="{}")
            for n, i in enumerate(ids)
        ]
    )
    return ids


async def test_pages_follow_each_other_to_the_end(store: Store) -> None:
    ids = journal(store, 7)
    manager = Manager(store)
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        page = await manager.list(limit=3, after=cursor)
        seen += [i.id for i in page.items]
        cursor = page.next
        if cursor is None:
            break
    assert seen == ids[::-1]
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    window = await manager.list(since=base + timedelta(seconds=2), until=base + timedelta(seconds=4))
    assert [i.id for i in window.items] == [ids[3], ids[2]]


async def test_pages_of_failures(store: Store) -> None:
    """Failed executions page as the others do, whether their workflow or only a task failed."""
    ids = journal(store, 9)
    failing = ids[1::2]  # exec-0001, 0003...: half with the workflow in exception, half with a task only
    for n, exec_id in enumerate(failing):
        own = ExecutionRecord(exec_id, "t", "exception", None, None, "Boom")
        task = TaskRecord(exec_id, "t1", None, "exception", None, None, "{}", "ValueError: boom")
        store.write([own] if n % 2 else [task])
    manager = Manager(store)
    for filters in ({"failed": True}, {"state": "exception"}, {"state": ["exception", "timeout"]}):
        seen: list[str] = []
        cursor = None
        for _ in range(len(failing) + 1):
            page = await manager.list(limit=1, after=cursor, **filters)
            seen += [i.id for i in page.items]
            cursor = page.next
            if cursor is None:
                break
        assert seen == failing[::-1], filters
    assert [i.id for i in (await manager.list(failed=False)).items] == ids[0::2][::-1]


async def test_version_and_node_filters(store: Store) -> None:
    journal(store, 2)
    manager = Manager(store)
    assert all(i.version is None for i in (await manager.list()).items)
    assert (await manager.list(version="1")).items == []  # no execution records a version yet
    assert (await manager.list(node="nobody")).items == []


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"state": "done"}, "unknown state 'done'"),
        ({"limit": 0}, "limit must be an integer from 1 to 1000"),
        ({"after": "not-a-cursor"}, "invalid cursor 'not-a-cursor'"),
        ({"since": "2026-01-01"}, "since must be a datetime"),
    ],
)
async def test_bad_filters_are_named(filters: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await Manager(MemoryStore()).list(**filters)


async def test_an_unknown_id(store: Store) -> None:
    with pytest.raises(UnknownExecution, match="no execution 'nope' in the store") as caught:
        await Manager(store).get("nope")
    assert isinstance(caught.value, KeyError)
    assert caught.value.exec_id == "nope"


async def test_nodes(engine_on: Engine, store: Store, tasks: dict[str, str]) -> None:
    await run(engine_on, chain("one", tasks["double"]))
    nodes = await Manager(store).nodes()
    if isinstance(store, MemoryStore):
        assert nodes == []
        return
    assert [(n.name, n.alive, n.owned) for n in nodes] == [(engine_on.node, True, 0)]
    assert nodes[0].epoch == 1
    assert nodes[0].lease_expires is not None
    assert nodes[0].as_dict()["lease_expires"] == nodes[0].lease_expires.isoformat()


def test_a_store_without_admin_is_refused() -> None:
    class Bare(MemoryStore):
        def admin(self) -> None:
            return None

    with pytest.raises(TypeError, match="cannot be managed"):
        Manager(Bare())
