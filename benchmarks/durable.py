"""How much a durable journal costs: a chain of no-op tasks with and without a store.

Runs the same work on an in-memory engine, on an engine journaling to a
`SQLiteStore` (WAL mode, a fresh file per run, commits on the event loop),
and on one whose store writes only from the journal's thread
(``write_on_loop=False``), alternating the three, and prints the median time
of each and the ratios to the in-memory engine, for:

- one chain of 1,000 no-op tasks: every task waits for its parent's end to
  be committed, so this is the worst case of the write-ahead rule (one
  commit per task, nothing to batch);
- 200 chains of 10 no-op tasks running at once: their records share commits.

    python benchmarks/durable.py [--tasks 1000] [--concurrent 200] [--runs 5]
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


async def one_run(template: WorkflowTemplate, store: SQLiteStore | None, workflows: int) -> float:
    """Seconds to run `workflows` instances of the template at once, until all are durable."""
    engine = Engine(store=store)
    start = time.perf_counter()
    started = [await engine.run_once(template, {"n": i}) for i in range(workflows)]
    await asyncio.gather(*(wf for wf in started if wf is not None))
    await engine.stop()
    return time.perf_counter() - start


async def compare(template: WorkflowTemplate, workflows: int, runs: int) -> tuple[float, float, float]:
    """Median seconds in memory, with an `SQLiteStore`, and with one that only writes from its thread.

    The three alternate in every repetition, so they see the same machine.
    """
    memory: list[float] = []
    durable: list[float] = []
    threaded: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        await one_run(template, None, workflows)  # warm-up
        for i in range(runs):
            memory.append(await one_run(template, None, workflows))
            for times, on_loop in ((durable, True), (threaded, False)):
                store = SQLiteStore(Path(tmp) / f"run-{i}-{on_loop}.db", write_on_loop=on_loop)
                try:
                    times.append(await one_run(template, store, workflows))
                finally:
                    store.close()
    return statistics.median(memory), statistics.median(durable), statistics.median(threaded)


def show(title: str, mem: float, dur: float, threaded: float) -> None:
    print(title)
    print(f"  in memory:                           {mem * 1000:8.1f} ms")
    print(f"  SQLiteStore:                         {dur * 1000:8.1f} ms   ratio: {dur / mem:5.2f}x")
    print(f"  SQLiteStore(write_on_loop=False):    {threaded * 1000:8.1f} ms   ratio: {threaded / mem:5.2f}x")


async def main(tasks: int, concurrent: int, runs: int) -> None:
    times = await compare(chain(tasks), 1, runs)
    show(f"one chain of {tasks} no-op tasks (the worst case), median of {runs} interleaved runs", *times)
    times = await compare(chain(10), concurrent, runs)
    show(f"{concurrent} chains of 10 no-op tasks at once (commits shared), median of {runs}", *times)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    register(TASK)(noop)
    try:
        asyncio.run(main(args.tasks, args.concurrent, args.runs))
    finally:
        TaskRegistry.unregister(TASK)
