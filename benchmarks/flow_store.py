"""What flow control costs and gives with a shared store (the cluster-wide queue of `tukio.flow.shared`).

    python benchmarks/flow_store.py [--store sqlite|postgres|both] [--triggers 2000] [--runs 3]
                                    [--flood 3000] [--dsn DSN]

One engine on a fresh SQLite file or PostgreSQL schema (dropped at the
end). Prints, each a median of ``--runs`` runs alternating the cases:

- **limit not reached**: microseconds per `Engine.trigger` of a one-step
  no-op template with ``"concurrency"`` far above what runs, against the
  same template without flow settings (a plain durable trigger), both
  awaited one after the other (``sequential``: the latency of one trigger)
  and 100 at a time (``100 at once``: triggers share commits); the
  workflows are awaited after the timing;
- **fairness**: a template with ``"concurrency": 5, "concurrency_key":
  "customer"``, each task taking about 1 ms; key 0 floods ``--flood``
  triggers at once, then keys 1-9 send one trigger each every 2 ms, 100
  rounds; the p50 and p99 wait (trigger to the task's start) of keys 1-9
  and of key 0. Keys 1-9 wait for their own slots only: the flood's
  backlog is not in their way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from tukio import Engine, WorkflowTemplate, register
from tukio.store import PostgresStore, SQLiteStore

DSN = "postgresql://postgres@127.0.0.1:5432/test"
WAITS: dict[Any, list[float]] = {}


@register("bench-store-noop")
async def noop(event: Any) -> None:
    """A task that does nothing."""


@register("bench-store-probe")
async def probe(event: Any) -> None:
    """A task that records how long its trigger waited, then takes about 1 ms."""
    data = event.data
    WAITS.setdefault(data["customer"], []).append(time.time() - data["t0"])
    await asyncio.sleep(0.001)


def template(uid: str, task: str, **fields: Any) -> WorkflowTemplate:
    spec = {"id": uid, "policy": "start-new", "tasks": [{"id": "a", "name": task}], **fields}
    return WorkflowTemplate.from_dict(spec)


class Journal:
    """Fresh stores on one journal (a file, or a schema), removed by `close`."""

    def __init__(self, kind: str, dsn: str) -> None:
        self.kind, self.dsn = kind, dsn
        self.dir = tempfile.mkdtemp(prefix="tukio-flow-")
        self.schema = f"bench_flow_{uuid.uuid4().hex[:8]}"
        self.made: list[Any] = []

    def store(self) -> Any:
        if self.kind == "sqlite":
            made: Any = SQLiteStore(os.path.join(self.dir, "journal.db"))
        else:
            made = PostgresStore(self.dsn, schema=self.schema)
        self.made.append(made)
        return made

    async def close(self) -> None:
        for store in self.made:
            store.close()
        if self.kind == "postgres":
            import asyncpg

            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            finally:
                await conn.close()


async def trigger_cost(journal: Journal, fields: dict[str, Any], triggers: int, at_once: int) -> float:
    """Microseconds per trigger, `at_once` triggers awaited together."""
    engine = Engine(store=journal.store(), node=f"cost-{uuid.uuid4().hex[:6]}")
    uid = f"cost-{uuid.uuid4().hex[:6]}"
    await engine.load(template(uid, "bench-store-noop", **fields))
    gate = asyncio.Semaphore(at_once)

    async def one(i: int) -> Any:
        async with gate:
            return await engine.trigger(uid, {"i": i})

    start = time.perf_counter()
    started = await asyncio.gather(*(one(i) for i in range(triggers)))
    elapsed = time.perf_counter() - start
    await asyncio.gather(*(w for w in started if w is not None))
    await asyncio.wait_for(engine.stop(), 60)
    return elapsed / triggers * 1e6


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fairness(journal: Journal, flood: int) -> tuple[list[float], list[float]]:
    """Waits (seconds) of the quiet keys and of the flooding key."""
    engine = Engine(store=journal.store(), node=f"fair-{uuid.uuid4().hex[:6]}")
    uid = f"fair-{uuid.uuid4().hex[:6]}"
    WAITS.clear()
    await engine.load(template(uid, "bench-store-probe", concurrency=5, concurrency_key="customer"))
    started = await asyncio.gather(*(engine.trigger(uid, {"customer": 0, "t0": time.time()}) for _ in range(flood)))
    for _ in range(100):
        for key in range(1, 10):
            started.append(await engine.trigger(uid, {"customer": key, "t0": time.time()}))
        await asyncio.sleep(0.002)
    await asyncio.wait_for(asyncio.gather(*(w for w in started if w is not None)), 600)
    await asyncio.wait_for(engine.stop(), 60)
    quiet = [w for key, waits in WAITS.items() if key != 0 for w in waits]
    return quiet, WAITS.get(0, [])


async def measure(kind: str, args: argparse.Namespace) -> None:
    cases: dict[str, Callable[[Journal], Any]] = {
        "plain, sequential": lambda j: trigger_cost(j, {}, args.triggers, 1),
        "limit, sequential": lambda j: trigger_cost(j, {"concurrency": 10**6}, args.triggers, 1),
        "plain, 100 at once": lambda j: trigger_cost(j, {}, args.triggers, 100),
        "limit, 100 at once": lambda j: trigger_cost(j, {"concurrency": 10**6}, args.triggers, 100),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    fair: list[tuple[float, float, float, float]] = []
    journal = Journal(kind, args.dsn)
    try:
        for _ in range(args.runs):
            for name, case in cases.items():
                results[name].append(await case(journal))
            quiet, flooding = await fairness(journal, args.flood)
            fair.append(
                (percentile(quiet, 0.5), percentile(quiet, 0.99), percentile(flooding, 0.5), percentile(flooding, 0.99))
            )
    finally:
        await journal.close()
    print(f"{kind}: limit not reached, microseconds per trigger (median of {args.runs}):")
    for mode in ("sequential", "100 at once"):
        plain = statistics.median(results[f"plain, {mode}"])
        limit = statistics.median(results[f"limit, {mode}"])
        print(f"  {mode:12} plain {plain:8.1f}  with a limit {limit:8.1f}  ratio {limit / plain:5.2f}")
    print(f"{kind}: fairness, {args.flood} triggers of key 0 then 9 keys x 100 (median of {args.runs}), ms:")
    names = ("quiet p50", "quiet p99", "flood p50", "flood p99")
    for n, name in enumerate(names):
        print(f"  {name:10} {statistics.median(f[n] for f in fair) * 1000:9.1f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--triggers", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flood", type=int, default=3000)
    parser.add_argument("--dsn", default=os.environ.get("TUKIO_TEST_POSTGRES", DSN))
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    for kind in ("sqlite", "postgres") if args.store == "both" else (args.store,):
        await measure(kind, args)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
