"""`tukio.web`: the JSON API, its checks and /metrics, through Starlette's TestClient on every store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from support import chain
from support import run_to_end as run

pytest.importorskip("starlette", reason="the web tests need the web extra (requirements-dev.txt)")
pytest.importorskip("httpx2", reason="Starlette's TestClient needs httpx2 (requirements-dev.txt)")

from starlette.testclient import TestClient

from tukio import Engine
from tukio._report import iso
from tukio.store import MemoryStore, SQLiteStore
from tukio.store.base import ExecutionRecord, Store, TaskRecord
from tukio.web import create_app

ACTION = {"X-Tukio-Action": "1"}


def open_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "journal.db")
    from tukio.store import PostgresStore

    dsn, schema = request.getfixturevalue("pg_schema")
    return PostgresStore(dsn, schema=schema)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(request.param, tmp_path, request)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    opened = SQLiteStore(tmp_path / "journal.db")
    yield opened
    opened.close()


def journal(store: Store, count: int, template_id: str = "t", state: str = "finished") -> list[str]:
    """Write `count` executions, one second apart; return their ids, oldest first."""
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ids = [f"{template_id}-{i:04}" for i in range(count)]
    records = [
        ExecutionRecord(i, template_id, state, iso(base + timedelta(seconds=n)), None, template="{}")
        for n, i in enumerate(ids)
    ]
    store.write(records)
    return ids


@pytest.fixture
def tasks(registered: Callable[..., Any], task_name: Callable[[str], str]) -> dict[str, str]:
    """'double' (outputs twice its input's 'n'), 'boom' (raises), 'park' (waits until cancelled)."""

    async def double(event: Any) -> dict[str, int]:
        return {"n": event.data["n"] * 2}

    async def boom(event: Any) -> None:
        raise ValueError("boom")

    async def park(event: Any) -> None:
        await asyncio.Event().wait()

    names = {key: task_name(key) for key in ("double", "boom", "park")}
    for key, fn in (("double", double), ("boom", boom), ("park", park)):
        registered(names[key], fn)
    return names


@pytest.fixture
async def engine_on(store: Store) -> AsyncIterator[Engine]:
    engine = Engine(store=store, lease=0.3)
    yield engine
    await asyncio.wait_for(engine.stop(force=True), 10)


async def test_list_and_get(engine_on: Engine, store: Store, tasks: dict[str, str]) -> None:
    good = await run(engine_on, chain("web-good", tasks["double"], tasks["double"]), 3)
    bad = await run(engine_on, chain("web-bad", tasks["boom"], tasks["double"]))
    with TestClient(create_app(store)) as client:
        listed = client.get("/api/executions")
        assert listed.status_code == 200
        items = listed.json()["items"]
        assert [i["id"] for i in items] == [bad, good]
        assert {"id", "template", "state", "node", "start", "end", "failed"} <= set(items[0])
        assert items[0]["failed"] is True
        assert [i["id"] for i in client.get("/api/executions?failed=true").json()["items"]] == [bad]
        assert [i["id"] for i in client.get("/api/executions?template=web-good").json()["items"]] == [good]
        assert client.get("/api/executions?state=pending").json() == {"items": [], "next": None}
        detail = client.get(f"/api/executions/{good}").json()
        assert detail["graph"] == {"t1": ["t2"], "t2": []}
        assert [(t["id"], t["state"], t["outputs"]) for t in detail["tasks"]] == [
            ("t1", "finished", {"n": 6}),
            ("t2", "finished", {"n": 12}),
        ]
        failed = client.get(f"/api/executions/{bad}").json()
        assert "boom" in failed["tasks"][0]["error"]
        unknown = client.get("/api/executions/nope")
        assert unknown.status_code == 404
        assert "nope" in unknown.json()["error"]
        nodes = client.get("/api/nodes").json()["nodes"]
        assert [n["name"] for n in nodes] == ([] if isinstance(store, MemoryStore) else [engine_on.node])


def test_pages_and_filters(sqlite_store: Store) -> None:
    ids = journal(sqlite_store, 5)
    with TestClient(create_app(sqlite_store)) as client:
        first = client.get("/api/executions?limit=2").json()
        second = client.get(f"/api/executions?limit=2&after={first['next']}").json()
        assert [i["id"] for i in first["items"] + second["items"]] == ids[::-1][:4]
        window = client.get("/api/executions?since=2026-01-01T00:00:01Z&until=2026-01-01T00:00:03").json()
        assert [i["id"] for i in window["items"]] == [ids[2], ids[1]]
        both = client.get("/api/executions?state=finished,cancelled").json()
        assert len(both["items"]) == 5
        assert client.get("/api/executions?state=finished&state=pending").json()["items"][0]["id"] == ids[-1]


@pytest.mark.parametrize(
    ("query", "parameter", "message"),
    [
        ("state=done", "state", "'done' is not one of"),
        ("failed=maybe", "failed", "not a boolean"),
        ("since=yesterday", "since", "not an ISO 8601 time"),
        ("limit=0", "limit", "not between 1 and 1000"),
        ("limit=ten", "limit", "not an integer"),
        ("after=garbage", "after", "invalid cursor"),
        ("colour=red", "colour", "unknown"),
    ],
)
def test_bad_query_values(query: str, parameter: str, message: str) -> None:
    with TestClient(create_app(MemoryStore())) as client:
        response = client.get(f"/api/executions?{query}")
    assert response.status_code == 400
    assert response.json()["parameter"] == parameter
    assert message in response.json()["error"]


def test_openapi_describes_every_endpoint() -> None:
    with TestClient(create_app(MemoryStore())) as client:
        schema = client.get("/api/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    assert set(schema["paths"]) == {
        "/api/executions",
        "/api/executions/{exec_id}",
        "/api/executions/{exec_id}/cancel",
        "/api/executions/{exec_id}/retry",
        "/api/executions/{exec_id}/resume",
        "/api/nodes",
        "/metrics",
    }
    names = [p["name"] for p in schema["paths"]["/api/executions"]["get"]["parameters"]]
    assert names == ["state", "failed", "template", "version", "node", "since", "until", "limit", "after"]


def test_metrics_from_the_store(store: Store) -> None:
    done = journal(store, 3, "m-done")
    journal(store, 2, "m-cancel", state="cancelled")
    journal(store, 1, "m-bad", state="exception")
    # A finished workflow two of whose tasks failed counts once among the failed.
    store.write([TaskRecord(done[0], tid, None, "exception", None, None, "{}", "boom") for tid in ("a", "b")])
    extra = "# TYPE mine counter\nmine 1\n"
    with TestClient(create_app(store, metrics=lambda: extra)) as client:
        response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert 'tukio_executions{state="finished"} 3' in lines
    assert 'tukio_executions{state="cancelled"} 2' in lines
    assert 'tukio_executions{state="pending"} 0' in lines
    assert 'tukio_executions{state="exception"} 1' in lines
    assert "tukio_executions_failed 2" in lines  # cancelled is not failed
    assert "tukio_nodes_alive 0" in lines
    assert lines[-1] == "mine 1"


def test_the_token_guards_the_api() -> None:
    with TestClient(create_app(MemoryStore(), token="s3cret")) as client:
        refused = client.get("/api/executions")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert client.get("/api/executions", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics").status_code == 401
        allowed = client.get("/api/executions", headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code == 200
        # The console's files carry no data: served without the token, with a strict policy.
        page = client.get("/")
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert client.get("/static/app.js").status_code == 200
        # The token stands for the action header (a non-browser client).
        cancel = client.post("/api/executions/nope/cancel", headers={"Authorization": "Bearer s3cret"})
        assert cancel.status_code == 404


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "X-Tukio-Action header"),
        ({**ACTION, "Sec-Fetch-Site": "cross-site"}, "cross-site request"),
        ({**ACTION, "Origin": "http://evil.example"}, "another origin"),
        ({**ACTION, "Origin": "null"}, "opaque origin"),
    ],
)
def test_cross_site_actions_are_refused(headers: dict[str, str], message: str) -> None:
    with TestClient(create_app(MemoryStore())) as client:
        response = client.post("/api/executions/x/cancel", headers=headers)
    assert response.status_code == 403
    assert message in response.json()["error"]


def test_actions_are_post_only_and_unknown_paths_are_json() -> None:
    with TestClient(create_app(MemoryStore())) as client:
        assert client.get("/api/executions/x/cancel").status_code == 405
        missing = client.get("/api/nothing")
        assert (missing.status_code, missing.json()["error"]) == (404, "nothing at /api/nothing")
        same_origin = {**ACTION, "Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
        assert client.post("/api/executions/x/cancel", headers=same_origin).status_code == 404
        for path in ("/", "/cluster", "/executions/abc"):
            assert "<title>tukio</title>" in client.get(path).text


def test_an_empty_token_is_refused() -> None:
    with pytest.raises(ValueError, match="the token is empty"):
        create_app(MemoryStore(), token=" ")


async def until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    """Wait (bounded) until `predicate()` is true (an engine acting on a request, a commit)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "condition never became true"
        await asyncio.sleep(0.02)


async def test_cancel_retry_and_resume(engine_on: Engine, store: Store, tasks: dict[str, str]) -> None:
    """The actions, on the engine's own loop (the app mounted beside it, as a user's ASGI app would)."""
    import httpx2

    parked = chain("web-park", tasks["double"], tasks["park"])
    await engine_on.load(parked)
    workflow = await engine_on.run_once(parked, {"n": 2})
    assert workflow is not None
    transport = httpx2.ASGITransport(app=create_app(store, engine=engine_on))
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver", headers=ACTION) as client:

        async def running() -> bool:  # once the journal has it (written in the background)
            detail = (await client.get(f"/api/executions/{workflow.uid}")).json()
            return bool(detail.get("state") == "pending" and detail["tasks"][1]["state"] == "pending")

        await until(running)
        conflict = await client.post(f"/api/executions/{workflow.uid}/retry")
        assert conflict.status_code == 409
        assert "unfinished" in conflict.json()["error"]
        cancelled = await client.post(f"/api/executions/{workflow.uid}/cancel")
        assert cancelled.json() == {"id": workflow.uid, "result": "cancelled"}
        await asyncio.wait_for(asyncio.wait([workflow]), 10)
        await engine_on.flush()
        assert (await client.get(f"/api/executions/{workflow.uid}")).json()["state"] == "cancelled"

        bad = await client.post(f"/api/executions/{workflow.uid}/retry", json={"from_task": "t9"})
        assert bad.status_code == 409
        assert "no task 't9'" in bad.json()["error"]
        retried = await client.post(f"/api/executions/{workflow.uid}/retry", json={"from_task": "t2"})
        assert retried.status_code == 201
        new_id = retried.json()["id"]

        async def rerun() -> bool:
            detail = (await client.get(f"/api/executions/{new_id}")).json()
            return bool(detail["tasks"][1]["state"] == "pending")  # run by the engine given to the app

        await until(rerun)
        detail = (await client.get(f"/api/executions/{new_id}")).json()
        assert detail["tasks"][0]["outputs"] == {"n": 4}  # kept from the first execution
        assert (await client.post(f"/api/executions/{new_id}/cancel")).json()["result"] == "cancelled"
        resumed = await client.post(f"/api/executions/{workflow.uid}/resume")
        assert resumed.json() == {"id": workflow.uid, "result": "resumed"}
        await until(lambda: _state_is(client, workflow.uid, "pending"))
        await client.post(f"/api/executions/{workflow.uid}/cancel")
        assert (await client.post("/api/executions/nope/resume")).status_code == 404


async def _state_is(client: Any, exec_id: str, state: str) -> bool:
    return bool((await client.get(f"/api/executions/{exec_id}")).json()["state"] == state)


@pytest.mark.parametrize("store", ["sqlite", "postgres"], indirect=True)
async def test_a_cancel_reaches_the_owning_engine(store: Store, tasks: dict[str, str]) -> None:
    """Served without the engine (as by another process): the cancel request reaches the node that runs it."""
    import httpx2

    engine = Engine(store=store, lease=5.0)  # a long lease: a loaded machine must not make the node look dead
    try:
        workflow = await engine.run_once(chain("web-owner", tasks["park"]), {"n": 1})
        assert workflow is not None
        await engine.flush()
        transport = httpx2.ASGITransport(app=create_app(store))
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver", headers=ACTION) as client:
            response = await client.post(f"/api/executions/{workflow.uid}/cancel")
        assert response.json() == {"id": workflow.uid, "result": "requested"}
        await asyncio.wait_for(asyncio.wait([workflow]), 10)
        assert workflow.cancelled()
    finally:
        await asyncio.wait_for(engine.stop(force=True), 10)
