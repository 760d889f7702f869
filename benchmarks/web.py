"""How fast the HTTP API answers on a big journal: ``GET /api/executions`` out of 1,000,000 executions.

Fills an SQLite file (and, with ``--postgres``, a PostgreSQL schema) as
``benchmarks/manage.py`` does, then times, ``--runs`` times each, the
median of requests to the application of `tukio.web.create_app`, in
process (httpx's ASGI transport: the application's own cost, JSON
included, without a socket):

- ``GET /api/executions`` (the first page of 50), with a state filter,
  with ``failed=true``, and the second page;
- ``GET /api/executions/{id}``;
- ``GET /metrics`` once (it reads every execution: its time grows with
  the journal).

    python benchmarks/web.py [--count 1000000] [--runs 7] [--postgres DSN]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).parent))
from manage import DSN, fill, report, timed

from tukio.store import SQLiteStore
from tukio.store.base import Store
from tukio.web import create_app


async def measure(store: Store, runs: int) -> dict[str, float]:
    transport = httpx2.ASGITransport(app=create_app(store))
    async with httpx2.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def get(path: str) -> httpx2.Response:
            response = await client.get(path)
            response.raise_for_status()
            return response

        first = (await get("/api/executions")).json()
        some = first["items"][7]["id"]
        after = first["next"]
        results = {
            "GET /api/executions": await timed(runs, lambda: get("/api/executions")),
            "?state=exception": await timed(runs, lambda: get("/api/executions?state=exception")),
            "?failed=true": await timed(runs, lambda: get("/api/executions?failed=true")),
            "second page": await timed(runs, lambda: get(f"/api/executions?after={after}")),
            "GET /api/executions/ID": await timed(runs, lambda: get(f"/api/executions/{some}")),
        }
        began = time.perf_counter()
        await get("/metrics")
        results["GET /metrics (once)"] = (time.perf_counter() - began) * 1000
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--postgres", nargs="?", const=DSN, help="also on PostgreSQL (this DSN)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, SQLiteStore(Path(tmp) / "journal.db") as store:
        filled = fill(store, args.count)
        report("SQLite", args.count, filled, asyncio.run(measure(store, args.runs)))
    if args.postgres:
        from tukio.store import PostgresStore

        schema = f"bench_web_{uuid.uuid4().hex[:8]}"
        with PostgresStore(args.postgres, schema=schema) as pg:
            try:
                filled = fill(pg, args.count)
                report("PostgreSQL", args.count, filled, asyncio.run(measure(pg, args.runs)))
            finally:
                pg.admin().runner.execute([(f'DROP SCHEMA "{schema}" CASCADE', ())])


if __name__ == "__main__":
    main()
