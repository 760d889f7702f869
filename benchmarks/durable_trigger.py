"""What a durable trigger costs, and whether an unlock counts as its task's body ends.

For each store (none, memory, SQLite, PostgreSQL) it measures, per trigger
of a one-step workflow ('start-new'):

- ``seq``: one trigger at a time (``await trigger()``, then the next);
- ``c1000``: 1,000 triggers at once (``gather``), divided by 1,000;
- ``+flush``: the same, each trigger followed by ``await engine.flush()``
  (how a caller made a trigger durable before triggers were durable);
- one-step durable workflows/s in one process (6,000 workflows, 1,000
  triggers at a time, until all ended and their records are committed);
- 'skip-until-unlock': of 300 triggers made just after the previous
  instance's unlocking task body ended (``not workflow.locked()``), how many
  were skipped.

Each measure runs in a fresh process; ``--before PATH`` also runs every
measure on the tukio checkout at PATH (alternating with this one, run after
run), and prints both medians side by side:

    python benchmarks/durable_trigger.py [--runs 5] [--before /tmp/write-before] [--stores memory,sqlite,postgres]
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

DSN = "postgresql://postgres@127.0.0.1:5432/test"
HERE = Path(__file__).resolve().parent.parent


# -- one run (in a child process) --------------------------------------------------------------
def _store(kind: str, where: str) -> Any:
    if kind == "none":
        return None
    if kind == "memory":
        from tukio.store import MemoryStore

        return MemoryStore()
    if kind == "sqlite":
        from tukio.store import SQLiteStore

        return SQLiteStore(where)
    from tukio.store.postgres import PostgresStore

    return PostgresStore(DSN, schema=where)


async def _measure(kind: str, where: str) -> dict[str, float]:
    from tukio import Engine, Workflow, WorkflowTemplate, register

    @register("bench-dt-noop")
    async def noop(event: Any) -> None:
        """Nothing: what is measured is the trigger."""

    @register("bench-dt-unlock")
    async def unlock(event: Any) -> None:
        """Unlock the workflow as this body ends."""
        workflow = Workflow.current_workflow()
        assert workflow is not None
        workflow.unlock_when_task_done()

    @register("bench-dt-park")
    async def park(event: Any) -> None:
        """Keep the workflow running."""
        await asyncio.sleep(3600)

    store = await asyncio.to_thread(_store, kind, where)
    engine = Engine(store=store)
    await engine.load(
        WorkflowTemplate.from_dict(
            {"id": "one", "policy": "start-new", "tasks": [{"id": "a", "name": "bench-dt-noop"}]}
        )
    )
    out: dict[str, float] = {}

    async def one(flush: bool) -> Any:
        workflow = await engine.trigger("one", {"n": 1})
        if flush:
            await engine.flush()
        return workflow

    await asyncio.gather(*await asyncio.gather(*(one(False) for _ in range(300))))  # warm-up
    for flush in (False, True):
        tag = "+flush" if flush else ""
        n = 300
        began = time.perf_counter()
        made = [await one(flush) for _ in range(n)]
        out[f"seq{tag} us"] = (time.perf_counter() - began) / n * 1e6
        await asyncio.gather(*made)
        began = time.perf_counter()
        made = await asyncio.gather(*(one(flush) for _ in range(1000)))
        out[f"c1000{tag} us"] = (time.perf_counter() - began) / 1000 * 1e6
        await asyncio.gather(*made)
    if kind != "none":
        total, wave = 6000, 1000
        began = time.perf_counter()
        for _ in range(total // wave):
            await asyncio.gather(*await asyncio.gather(*(engine.trigger("one", {"n": 1}) for _ in range(wave))))
        await engine.flush()
        out["workflows/s"] = total / (time.perf_counter() - began)
    await engine.load(
        WorkflowTemplate.from_dict(
            {
                "id": "lock",
                "policy": "skip-until-unlock",
                "tasks": [{"id": "a", "name": "bench-dt-unlock"}, {"id": "b", "name": "bench-dt-park"}],
                "graph": {"a": ["b"]},
            }
        )
    )
    skipped = 0
    last = await engine.trigger("lock", {})
    for _ in range(300):
        assert last is not None
        for _ in range(100_000):
            if not last.locked():
                break
            await asyncio.sleep(0)
        else:
            raise AssertionError("the unlocking task never ended")
        made = await engine.trigger("lock", {})
        if made is None:
            skipped += 1
        else:
            last = made
    out["unlock skipped /300"] = skipped
    await engine.stop(force=True)
    if store is not None and hasattr(store, "close"):
        store.close()
    return out


# -- the driver ----------------------------------------------------------------------------------------
def _sql(query: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(DSN)
        try:
            await conn.execute(query)
        finally:
            await conn.close()

    asyncio.run(go())


def _run(tree: Path, kind: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        where = str(Path(tmp) / "bench.db")
        schema = f"bench_dt_{uuid.uuid4().hex[:10]}"
        if kind == "postgres":
            where = schema
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", kind, where],
                capture_output=True,
                text=True,
                timeout=600,
                env={**os.environ, "PYTHONPATH": str(tree)},
                check=True,
            )
        finally:
            if kind == "postgres":
                _sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return dict(json.loads(proc.stdout.splitlines()[-1]))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        print(json.dumps(asyncio.run(_measure(sys.argv[2], sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", type=Path, help="a tukio checkout to compare with")
    parser.add_argument("--stores", default="none,memory,sqlite,postgres")
    args = parser.parse_args()
    trees = {"after": HERE}
    if args.before is not None:
        trees = {"before": args.before.resolve(), "after": HERE}
    for kind in args.stores.split(","):
        results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for _ in range(args.runs):
            for name, tree in trees.items():
                results[name].append(_run(tree, kind))
        print(f"store={kind} (medians of {args.runs} runs)")
        for key in results["after"][0]:
            cells = []
            for name in trees:
                values = [r[key] for r in results[name] if key in r]
                cells.append(f"{name} {statistics.median(values):,.1f}" if values else f"{name} -")
            print(f"  {key:22} " + "   ".join(cells))


if __name__ == "__main__":
    main()
