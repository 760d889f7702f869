"""How much a durable journal costs: a chain of no-op tasks with and without a store.

Runs a chain of 1,000 no-op tasks on an in-memory engine and on an engine
journaling to a `SQLiteStore` (WAL mode, a fresh file per run), alternating
the two, and prints the median time of each and their ratio. In the chain
every task waits for its parent's end to be committed, so this measures the
worst case of the write-ahead rule: one commit per task, nothing to batch.

    python benchmarks/durable.py [--tasks 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from tukio import Engine, TaskRegistry, WorkflowTemplate, register
from tukio.store import SQLiteStore

TASK = "bench-durable-noop"


async def noop(data: object) -> None:
    """A task that does nothing (its inputs flow on)."""


def chain(n: int) -> WorkflowTemplate:
    """A template of `n` tasks, each the only successor of the previous one."""
    tasks = [{"id": f"t{i}", "name": TASK} for i in range(n)]
    graph = {f"t{i}": [f"t{i + 1}"] if i + 1 < n else [] for i in range(n)}
    return WorkflowTemplate.from_dict({"id": "durable-chain", "tasks": tasks, "graph": graph})


async def one_run(template: WorkflowTemplate, store: SQLiteStore | None) -> float:
    """Seconds to run the chain once, from trigger to the end being durable."""
    engine = Engine(store=store)
    start = time.perf_counter()
    workflow = await engine.run_once(template, {"n": 0})
    assert workflow is not None
    await workflow
    await engine.stop()
    return time.perf_counter() - start


async def main(n: int, runs: int) -> tuple[float, float]:
    """Return the median seconds without and with a store."""
    template = chain(n)
    memory: list[float] = []
    durable: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        await one_run(template, None)  # warm-up
        for i in range(runs):
            memory.append(await one_run(template, None))
            store = SQLiteStore(Path(tmp) / f"run-{i}.db")
            try:
                durable.append(await one_run(template, store))
            finally:
                store.close()
    return statistics.median(memory), statistics.median(durable)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    register(TASK)(noop)
    try:
        mem, dur = asyncio.run(main(args.tasks, args.runs))
    finally:
        TaskRegistry.unregister(TASK)
    print(f"chain of {args.tasks} no-op tasks, median of {args.runs} interleaved runs")
    print(f"in memory:       {mem * 1000:8.1f} ms")
    print(f"SQLiteStore:     {dur * 1000:8.1f} ms")
    print(f"ratio:           {dur / mem:8.2f}x")
