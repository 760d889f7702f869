"""How fast `tukio.manage` lists a big journal: the first page of 50 out of 1,000,000 executions.

Fills an SQLite file and a PostgreSQL schema with ``--count`` executions
(10 templates; 90 % finished, 5 % 'exception', 5 % unfinished; 1 % of them
with a failed task), then times, ``--runs`` times each, the median of:

- the first page of 50, newest first, with no filter;
- the first page with a state filter ('exception'), a template filter, and ``failed=True``;
- a state no execution is in ('timeout', which also looks at the tasks; 'cancelled');
- the second page (from the first one's cursor);
- one execution with its tasks (`Manager.get`).

    python benchmarks/manage.py [--count 1000000] [--runs 7] [--postgres DSN] [--only sqlite|postgres]

The PostgreSQL server is ``TUKIO_TEST_POSTGRES`` (else the local ``test``
database); the schema is made for the run and dropped after it. Filling
takes a minute or two per store at the default size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tukio._report import iso
from tukio.manage import Manager
from tukio.store import SQLiteStore
from tukio.store.base import ExecutionRecord, Record, Store, TaskRecord

BATCH = 10_000
DSN = os.environ.get("TUKIO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def records(count: int) -> Iterator[list[Record]]:
    """The journal's records, `BATCH` executions at a time."""
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    batch: list[Record] = []
    for n in range(count):
        exec_id = f"{n:08}-{uuid.uuid4().hex[:8]}"
        start = iso(base + timedelta(seconds=n))
        state = "pending" if n % 20 == 0 else "exception" if n % 20 == 1 else "finished"
        end = None if state == "pending" else start
        batch.append(ExecutionRecord(exec_id, f"template-{n % 10}", state, start, end, template="{}"))
        batch.append(TaskRecord(exec_id, "t1", None, "exception" if n % 100 == 2 else "finished", start, end, "{}"))
        if len(batch) >= 2 * BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def fill(store: Store, count: int) -> float:
    began = time.perf_counter()
    for batch in records(count):
        store.write(batch)
    return time.perf_counter() - began


async def timed(runs: int, call: Callable[[], Awaitable[Any]]) -> float:
    """The median time of `call` over `runs` runs, in milliseconds."""
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        await call()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


async def measure(store: Store, runs: int) -> dict[str, float]:
    manager = Manager(store)
    first = await manager.list(limit=50)
    cursor = first.next
    if cursor is None or len(first.items) != 50:
        raise SystemExit("the journal holds fewer than 51 executions: raise --count")
    some = first.items[7].id
    return {
        "first page": await timed(runs, lambda: manager.list(limit=50)),
        "state=exception": await timed(runs, lambda: manager.list(state="exception", limit=50)),
        "template=template-3": await timed(runs, lambda: manager.list(template="template-3", limit=50)),
        "failed=True": await timed(runs, lambda: manager.list(failed=True, limit=50)),
        "state=timeout (none)": await timed(runs, lambda: manager.list(state="timeout", limit=50)),
        "state=cancelled (none)": await timed(runs, lambda: manager.list(state="cancelled", limit=50)),
        "second page": await timed(runs, lambda: manager.list(limit=50, after=cursor)),
        "get one": await timed(runs, lambda: manager.get(some)),
    }


def _empty(store: Store) -> bool:
    return not asyncio.run(Manager(store).list(limit=1)).items


def report(name: str, count: int, filled: float, results: dict[str, float]) -> None:
    print(f"{name}: {count:,} executions (filled in {filled:.0f} s)")
    for what, ms in results.items():
        print(f"  {what:<22} {ms:8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--postgres", default=DSN)
    parser.add_argument("--only", choices=("sqlite", "postgres"))
    parser.add_argument("--sqlite-file", metavar="PATH", help="keep the SQLite journal there (filled once, reused)")
    args = parser.parse_args()
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(args.sqlite_file or Path(tmp) / "journal.db")
            with SQLiteStore(path) as store:
                filled = fill(store, args.count) if _empty(store) else 0.0
                report("SQLite", args.count, filled, asyncio.run(measure(store, args.runs)))
    if args.only in (None, "postgres"):
        from tukio.store import PostgresStore

        schema = f"bench_manage_{uuid.uuid4().hex[:8]}"
        with PostgresStore(args.postgres, schema=schema) as pg:
            try:
                filled = fill(pg, args.count)
                pg.admin().runner.execute([(f'ANALYZE "{schema}".executions', ()), (f'ANALYZE "{schema}".tasks', ())])
                report("PostgreSQL", args.count, filled, asyncio.run(measure(pg, args.runs)))
            finally:
                pg.admin().runner.execute([(f'DROP SCHEMA "{schema}" CASCADE', ())])


if __name__ == "__main__":
    main()
