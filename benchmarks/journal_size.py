"""Journal bytes per execution, trigger cost and durable throughput (template versions, issue 20).

Runs EXECUTIONS executions of a three-task chain whose template carries a
realistic amount of configuration, on an engine journaling to a fresh
`SQLiteStore` file or a fresh PostgreSQL schema, in batches of 1,000
(triggered, then awaited). Prints one JSON line:

- ``bytes_per_execution``: the SQLite file (database plus write-ahead log,
  after a checkpoint) or ``pg_total_relation_size`` of the journal's tables,
  over EXECUTIONS;
- ``trigger_us``: the median time of one ``Engine.trigger`` call (per batch);
- ``per_second``: executions run to their end per second, overall.

Before template versions, a store kept a copy of the template with each
execution; since, one per version. To compare, run the same script against
an untouched checkout (``--compare DIR`` runs both, alternating, ``--runs``
times each, and prints the medians and ratios):

    git worktree add /tmp/version-before 1c4bbc9
    python benchmarks/journal_size.py --store sqlite --executions 100000 --compare /tmp/version-before
    python benchmarks/journal_size.py --store postgres --executions 100000 --compare /tmp/version-before
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

DSN = os.environ.get("TUKIO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BATCH = 1000


def template() -> dict[str, Any]:
    """A chain a -> b -> c whose tasks carry some configuration, as services' templates do."""
    config = {"endpoint": "https://example.invalid/api/v2/orders", "retries": 3, "fields": [f"f{i}" for i in range(20)]}
    return {
        "id": "bench-versions",
        "title": "an order's three steps",
        "policy": "start-new",
        "tasks": [{"id": t, "name": "bench-versions-step", "config": config} for t in "abc"],
        "graph": {"a": ["b"], "b": ["c"], "c": []},
    }


async def run(store_kind: str, executions: int) -> dict[str, Any]:
    from tukio import Engine, register
    from tukio.store import PostgresStore, SQLiteStore

    @register("bench-versions-step")
    async def step(event: Any) -> dict[str, Any]:
        return {"n": event.data["n"]}

    with tempfile.TemporaryDirectory() as tmp:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        path = Path(tmp) / "journal.db"
        store: Any = SQLiteStore(path) if store_kind == "sqlite" else PostgresStore(DSN, schema=schema)
        try:
            engine = Engine(store=store)
            await engine.load(template())
            trigger_times: list[float] = []
            began = time.perf_counter()
            for first in range(0, executions, BATCH):
                count = min(BATCH, executions - first)
                t0 = time.perf_counter()
                runs = [await engine.trigger("bench-versions", {"n": first + i}) for i in range(count)]
                trigger_times.append((time.perf_counter() - t0) / count)
                await asyncio.gather(*runs)  # type: ignore[arg-type]
            await engine.stop()
            elapsed = time.perf_counter() - began
            size = await asyncio.to_thread(_size, store, store_kind, path, schema)
        finally:
            store.close()
            if store_kind == "postgres":
                await _drop(schema)
    return {
        "bytes_per_execution": size / executions,
        "trigger_us": statistics.median(trigger_times) * 1e6,
        "per_second": executions / elapsed,
    }


def _size(store: Any, kind: str, path: Path, schema: str) -> int:
    if kind == "sqlite":
        store.checkpoint()
        return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())
    return asyncio.run(_pg_size(schema))


async def _pg_size(schema: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(f'VACUUM ANALYZE "{schema}".executions')
        total = 0
        for table in ("executions", "tasks", "task_events", "versions"):
            total += await conn.fetchval(
                "SELECT coalesce(pg_total_relation_size(to_regclass($1)), 0)", f'"{schema}".{table}'
            )
        return int(total)
    finally:
        await conn.close()


async def _drop(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def compare(before: str, args: argparse.Namespace) -> None:
    """Run this script on `before` and on this checkout, alternating; print medians and ratios."""
    here = str(Path(__file__).resolve().parent.parent)
    results: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for _ in range(args.runs):
        for label, root in (("before", before), ("after", here)):
            env = {**os.environ, "PYTHONPATH": root}
            cmd = [sys.executable, __file__, "--store", args.store, "--executions", str(args.executions)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=root)
            results[label].append(json.loads(out.stdout.splitlines()[-1]))
    for key in ("bytes_per_execution", "trigger_us", "per_second"):
        b = statistics.median(r[key] for r in results["before"])
        a = statistics.median(r[key] for r in results["after"])
        print(f"{args.store} {key}: before {b:.1f}, after {a:.1f}, after/before {a / b:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="with --compare: runs of each checkout")
    parser.add_argument("--compare", metavar="DIR", help="an untouched checkout to compare with")
    args = parser.parse_args()
    if args.compare:
        compare(args.compare, args)
        return
    print(json.dumps(asyncio.run(run(args.store, args.executions))))


if __name__ == "__main__":
    main()
