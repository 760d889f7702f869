"""Events shared by the nodes survive dropped connections and skewed clocks (issue 19, item 7)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from chaos_proxy import Proxy
from support import template

from tukio import Engine, Event
from tukio.store import SQLiteStore
from tukio.store.postgres import PostgresStore

Schema = tuple[str, str]


def via(dsn: str, port: int) -> str:
    """`dsn` with its port replaced by `port` (the proxy's)."""
    parts = urlsplit(dsn)
    return parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}").geturl()


@pytest.fixture
def stores(pg_schema: Schema) -> Iterator[Callable[..., PostgresStore]]:
    """``stores(dsn=None, **options)``: stores on the test's schema, closed after the test."""
    dsn, schema = pg_schema
    made: list[PostgresStore] = []

    def new(other_dsn: str | None = None, **options: Any) -> PostgresStore:
        made.append(PostgresStore(other_dsn or dsn, schema=schema, **options))
        return made[-1]

    yield new
    for store in made:
        store.close()


async def test_a_publish_whose_answer_was_lost_keeps_the_event_once(
    pg_schema: Schema, stores: Callable[..., PostgresStore]
) -> None:
    dsn, _ = pg_schema
    proxy = Proxy(urlsplit(dsn).port or 5432)
    port = await proxy.start()
    try:
        publisher = await asyncio.to_thread(stores, via(dsn, port))  # the proxy runs on this loop
        publisher.attach("cut-off", lease=30)
        first = await asyncio.to_thread(publisher.publish, {"n": 0}, "news")  # the writer's connection is open
        proxy.obey("cut")  # the server commits the next statement; its answer never comes back
        second = await asyncio.to_thread(publisher.publish, {"n": 1}, "news")
    finally:
        await proxy.close()
    reader = stores()
    reader.attach("reader", lease=30)
    events = await asyncio.to_thread(reader.events_after, 0)
    assert [(i, data) for i, _, _, data in events] == [(first, {"n": 0}), (second, {"n": 1})]


def test_the_same_key_publishes_once(stores: Callable[..., PostgresStore]) -> None:
    store = stores()
    store.attach("keyed", lease=30)
    key = str(uuid.uuid4())
    first = store.publish({"n": 1}, "t", key=key)
    assert store.publish({"n": 1}, "t", key=key) == first
    assert store.publish({"n": 2}, "t") == first + 1  # a new key each time by default
    reader = stores()
    reader.attach("reader", lease=30)
    assert [data for _, _, _, data in reader.events_after(0)] == [{"n": 1}, {"n": 2}]
    with pytest.raises(ValueError, match="badly formed hexadecimal UUID string"):
        store.publish({"n": 3}, "t", key="not-a-uuid")


async def test_events_reach_a_listener_once_while_the_sessions_are_killed(
    pg_schema: Schema, stores: Callable[..., PostgresStore], registered: Callable[..., Any]
) -> None:
    dsn, _ = pg_schema
    tag = uuid.uuid4().hex[:8]
    names = {"listener": f"ev-l-{tag}", "publisher": f"ev-p-{tag}"}
    total = 30
    got: list[int] = []
    ready = asyncio.Event()

    async def listening(event: Event) -> None:
        ready.set()
        while not got or got[-1] != total - 1:
            seen = await asyncio.current_task().queue.get()  # type: ignore[union-attr]
            got.append(seen.data["n"])

    registered(f"ev-listen-{tag}", listening)
    options = {"server_settings": {"application_name": names["listener"]}}
    engine = Engine(store=stores(**options), node=names["listener"], lease=30)
    await engine.load(template([("w", f"ev-listen-{tag}", {"topics": ["news"]})], {}, id="ev-l", topics=[]))
    workflow = await engine.trigger("ev-l", {})
    assert workflow is not None
    await asyncio.wait_for(ready.wait(), 10)
    publisher = stores(server_settings={"application_name": names["publisher"]})
    publisher.attach(names["publisher"], lease=30)
    import asyncpg

    killer = await asyncpg.connect(dsn, timeout=5)
    query = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = ANY($1) AND pid <> pg_backend_pid()"
    )
    killed = 0
    try:
        for n in range(total):
            # The listener's sessions before every other event, the publisher's too before every sixth.
            victims = [names["listener"], names["publisher"]] if n % 6 == 0 else [names["listener"]]
            if n % 2 == 0:
                killed += await killer.fetchval(query, victims)
            await asyncio.to_thread(publisher.publish, {"n": n}, "news")
    finally:
        await killer.close()
    await asyncio.wait_for(workflow, 30)
    assert killed > 0
    assert got == list(range(total))  # each once, in the order they were published
    await asyncio.wait_for(engine.stop(), 10)


def test_a_process_whose_clock_runs_ahead_keeps_its_events_for_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SQLiteStore(tmp_path / "clock.db") as ahead, SQLiteStore(tmp_path / "clock.db") as other:
        for store, name in ((ahead, "ahead"), (other, "other")):
            store.attach(name, lease=2)
            store.join()
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 10)  # every lease looks expired from here
        first = ahead.publish({"n": 1}, "news")
        assert first > 0
        monkeypatch.setattr(time, "time", lambda: real() - 10)  # and from a clock behind, every one alive
        assert other.publish({"n": 2}, "news") == first + 1
        monkeypatch.undo()
        assert [(i, data) for i, _, _, data in other.events_after(0)] == [(first, {"n": 1})]
        assert [(i, data) for i, _, _, data in ahead.events_after(first)] == [(first + 1, {"n": 2})]


async def test_a_lost_listening_connection_wakes_the_listener(
    pg_schema: Schema, stores: Callable[..., PostgresStore]
) -> None:
    import asyncpg

    dsn, _ = pg_schema
    name = f"ev-wake-{uuid.uuid4().hex[:8]}"
    store = stores(server_settings={"application_name": name})
    store.attach(name, lease=30)
    woken = threading.Event()
    assert await asyncio.to_thread(store.listen, woken.set) is True
    assert await asyncio.to_thread(store.listen, woken.set) is False  # listening already
    killer = await asyncpg.connect(dsn, timeout=5)
    try:
        query = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1"
        assert await killer.fetchval(query, name) >= 1
    finally:
        await killer.close()
    # No event was published: the lost connection itself wakes the listener, which listens again at once.
    assert await asyncio.to_thread(woken.wait, 10)
    assert await asyncio.to_thread(store.listen, woken.set) is True  # on a new connection
