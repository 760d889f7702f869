"""Events to listening tasks: the cost of journaling them, and their latency across nodes.

- **local**: one engine, one task listening on a topic; `data_received` N
  times, each awaited by the task before the next: the median and p99
  latency from the call to the task getting the event, and the events per
  second of a burst of N (sent without waiting), without a store and with
  each store (every event journaled before the task gets it);
- **across**: two engines on two threads, each with its own store object on
  one journal (an SQLite file, a PostgreSQL schema), as two processes would
  be; `data_received` on one, the task listening on the other: the median
  and p99 latency.

    python benchmarks/events.py [--events 500] [--dsn DSN] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tukio import Engine, Event, register
from tukio.store import MemoryStore, SQLiteStore, Store

DSN = "postgresql://postgres@127.0.0.1:5432/test"
#: perf_counter() when the listening task got each event, by event number.
ARRIVED: dict[int, float] = {}
SIGNAL: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}

TEMPLATE: dict[str, Any] = {
    "id": "bench-events",
    "topics": [],
    "tasks": [{"id": "w", "name": "bench-events-listen", "topics": ["news"]}],
    "graph": {},
}


@register("bench-events-listen")
async def listen(event: Event) -> None:
    """Note when each event arrives; stop at ``{'n': -1}``."""
    queue = asyncio.current_task().queue  # type: ignore[union-attr]
    SIGNAL[asyncio.get_running_loop()].set()  # listening
    while True:
        seen = await queue.get()
        n = seen.data["n"]
        if n < 0:
            return
        ARRIVED[n] = time.perf_counter()
        SIGNAL[asyncio.get_running_loop()].set()


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
    }


async def wait_signal() -> None:
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(SIGNAL[loop].wait(), 30)
    SIGNAL[loop].clear()


async def local(store: Store | None, count: int) -> dict[str, Any]:
    """Latency of each event to a task of the same engine, then a burst's throughput."""
    loop = asyncio.get_running_loop()
    SIGNAL[loop] = asyncio.Event()
    ARRIVED.clear()
    engine = Engine(store=store) if store is not None else Engine()
    await engine.load(TEMPLATE)
    wf = await engine.trigger("bench-events", {})
    assert wf is not None
    await wait_signal()
    latencies = []
    for n in range(count):
        began = time.perf_counter()
        await engine.data_received({"n": n, "pad": "x" * 100}, topic="news")
        await wait_signal()
        latencies.append(ARRIVED[n] - began)
    began = time.perf_counter()
    for n in range(count, 3 * count):
        await engine.data_received({"n": n, "pad": "x" * 100}, topic="news")
    while len(ARRIVED) < 3 * count:
        await wait_signal()
    burst = 2 * count / (max(ARRIVED.values()) - began)
    await engine.data_received({"n": -1}, topic="news")
    await asyncio.wait_for(wf, 30)
    await asyncio.wait_for(engine.stop(), 30)
    return {**summary(latencies), "burst_events_per_s": round(burst)}


def across(make: Callable[[], Store], count: int) -> dict[str, Any]:
    """Latency of each event from an engine on one thread to a task of an engine on another."""
    listening = threading.Event()
    loop_b = asyncio.new_event_loop()
    SIGNAL[loop_b] = asyncio.Event()
    ARRIVED.clear()
    thread = threading.Thread(target=loop_b.run_forever, daemon=True)
    thread.start()

    def on_b(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop_b).result(60)

    async def start_b() -> tuple[Engine, Any]:
        engine = Engine(store=make(), node="b", lease=30)
        await engine.load(TEMPLATE)
        wf = await engine.trigger("bench-events", {})
        await wait_signal()
        listening.set()
        return engine, wf

    async def send() -> list[float]:
        engine = Engine(store=make(), node="a", lease=30)
        latencies = []
        for n in range(count):
            began = time.perf_counter()
            await engine.data_received({"n": n, "pad": "x" * 100}, topic="news")
            while n not in ARRIVED:  # noqa: ASYNC110 - it arrives on the other thread's loop
                await asyncio.sleep(0.0002)
            latencies.append(ARRIVED[n] - began)
        await engine.data_received({"n": -1}, topic="news")
        await asyncio.wait_for(engine.stop(), 30)
        assert engine.store is not None
        engine.store.close()
        return latencies

    engine_b, wf_b = on_b(start_b())
    try:
        latencies = asyncio.run(send())
        on_b(asyncio.wait_for(_await(wf_b), 30))
        on_b(_stop(engine_b))  # called on its own loop
        assert engine_b.store is not None
        engine_b.store.close()
    finally:
        loop_b.call_soon_threadsafe(loop_b.stop)
        thread.join(10)
    return summary(latencies)


async def _await(awaitable: Any) -> Any:
    return await awaitable


async def _stop(engine: Engine) -> None:
    await asyncio.wait_for(engine.stop(), 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        makers: dict[str, Callable[[], Store | None]] = {
            "none": lambda: None,
            "memory": MemoryStore,
            "sqlite": lambda: SQLiteStore(Path(tmp) / f"{uuid.uuid4().hex}.db"),
        }
        schema = f"bench_events_{uuid.uuid4().hex[:8]}"
        if not args.no_postgres:
            from tukio.store.postgres import PostgresStore

            makers["postgres"] = lambda: PostgresStore(args.dsn, schema=schema)
        for name, make in makers.items():
            for journaled in (False, True) if name != "none" else (False,):
                store = make()
                if store is not None:
                    store.keeps_events = journaled  # False: as before task events were journaled
                label = f"local/{name}" + (
                    "" if store is None else " events journaled" if journaled else " not journaled"
                )
                results[label] = asyncio.run(local(store, args.events))
                if store is not None:
                    store.close()
        shared = Path(tmp) / "shared.db"
        for poll in (0.05, 0.01):
            results[f"across/sqlite poll {poll}s"] = across(
                lambda p=poll: SQLiteStore(shared, event_poll=p), args.events // 5
            )  # type: ignore[misc]
        if not args.no_postgres:
            from tukio.store.postgres import PostgresStore

            results["across/postgres"] = across(lambda: PostgresStore(args.dsn, schema=schema), args.events)
            _drop(args.dsn, schema)
    for name, row in results.items():
        print(f"{name:28} {row}")
    print(json.dumps(results))


def _drop(dsn: str, schema: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


if __name__ == "__main__":
    main()
