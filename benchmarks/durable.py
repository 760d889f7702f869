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

It also measures the floor of the first: a bare ``sqlite3`` insert of one
task row and its commit, on a WAL file with the store's default
``synchronous=NORMAL`` (no tukio code), per task; the in-memory time plus
that floor, over the in-memory time, is the best ratio a commit per task
allows. And the store alone: `SQLiteStore.write_nowait` of one task record
per task, as an engine's store (a node, its writes fenced) commits it, with
its checkpoints, but no engine and no journal.

    python benchmarks/durable.py [--tasks 1000] [--concurrent 200] [--runs 5]

Wall-clock times on a shared machine vary from run to run; instruction
counts do not. ``--only memory|sqlite|null`` runs just one engine (``null``:
a `SQLiteStore` whose commits write nothing, to see the journal's own cost)
on ``--runs`` chains of ``--tasks`` tasks, one after the other, and prints
nothing; under ``valgrind --tool=callgrind``, the difference between two
``--runs`` values, divided by the tasks it adds, is the instructions per task:

    valgrind --tool=callgrind python benchmarks/durable.py --only sqlite --tasks 200 --runs 1
    valgrind --tool=callgrind python benchmarks/durable.py --only sqlite --tasks 200 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tukio import Engine, TaskRegistry, WorkflowTemplate, register
from tukio.store import SQLiteStore
from tukio.store.base import ExecutionRecord, Record, TaskRecord

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


def commit_floor(directory: Path, rows: int) -> float:
    """Seconds per row of `rows` one-row inserts, each its own commit (WAL, synchronous=NORMAL), bare sqlite3."""
    db = sqlite3.connect(directory / "floor.db", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE tasks (exec_id TEXT NOT NULL, task_id TEXT NOT NULL, task_exec_id TEXT, "
            "state TEXT NOT NULL, started TEXT, ended TEXT, data BLOB, error TEXT, "
            "PRIMARY KEY (exec_id, task_id)) WITHOUT ROWID"
        )
        stamp = "2026-01-01T00:00:00.000000+00:00"
        exec_id = "0f6e1f8c-6b1e-4a8e-9d7a-1c2b3c4d5e6f"
        began = time.perf_counter()
        for i in range(rows):
            db.execute(
                "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (exec_id, f"t{i}", exec_id, "finished", stamp, stamp, '{"inputs":{"n":0},"outputs":{"n":0}}', None),
            )
        return (time.perf_counter() - began) / rows
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            (directory / f"floor.db{suffix}").unlink(missing_ok=True)


def store_floor(directory: Path, rows: int) -> float:
    """Seconds per record of `rows` lone task records committed by `SQLiteStore.write_nowait` (a node's store)."""
    store = SQLiteStore(directory / "store.db")
    try:
        store.attach("bench")
        store.join()
        stamp = "2026-01-01T00:00:00.000000+00:00"
        exec_id = "0f6e1f8c-6b1e-4a8e-9d7a-1c2b3c4d5e6f"
        store.write([ExecutionRecord(exec_id, "durable-chain", "pending", stamp)])
        data = '{"inputs":{"n":0},"outputs":{"n":0}}'
        records = [TaskRecord(exec_id, f"t{i}", exec_id, "finished", stamp, stamp, data) for i in range(rows)]
        began = time.perf_counter()
        for record in records:
            if not store.write_nowait([record]):
                store.write([record])
        return (time.perf_counter() - began) / rows
    finally:
        store.close()
        for suffix in ("", "-wal", "-shm"):
            (directory / f"store.db{suffix}").unlink(missing_ok=True)


class NullStore(SQLiteStore):
    """A `SQLiteStore` whose commits write nothing (the journal's own cost, without SQLite's)."""

    def write_nowait(self, records: Sequence[Record]) -> bool:
        return True


async def only(kind: str, tasks: int, runs: int) -> None:
    """Run `runs` chains of `tasks` tasks one after the other on one engine (see ``--only``)."""
    template = chain(tasks)
    with tempfile.TemporaryDirectory() as tmp:
        store = None if kind == "memory" else (SQLiteStore if kind == "sqlite" else NullStore)(Path(tmp) / "only.db")
        try:
            engine = Engine(store=store)
            for i in range(runs):
                workflow = await engine.run_once(template, {"n": i})
                if workflow is not None:
                    await workflow
            await engine.stop()
        finally:
            if store is not None:
                store.close()


def show(title: str, mem: float, dur: float, threaded: float) -> None:
    print(title)
    print(f"  in memory:                           {mem * 1000:8.1f} ms")
    print(f"  SQLiteStore:                         {dur * 1000:8.1f} ms   ratio: {dur / mem:5.2f}x")
    print(f"  SQLiteStore(write_on_loop=False):    {threaded * 1000:8.1f} ms   ratio: {threaded / mem:5.2f}x")


async def main(tasks: int, concurrent: int, runs: int) -> None:
    times = await compare(chain(tasks), 1, runs)
    show(f"one chain of {tasks} no-op tasks (the worst case), median of {runs} interleaved runs", *times)
    with tempfile.TemporaryDirectory() as tmp:
        floors = [(commit_floor(Path(tmp), tasks), store_floor(Path(tmp), tasks)) for _ in range(runs)]
    floor = statistics.median(f[0] for f in floors)
    alone = statistics.median(f[1] for f in floors)
    best = (times[0] + floor * tasks) / times[0]
    print(
        f"  floor: a bare sqlite3 insert + commit (WAL, synchronous=NORMAL): {floor * 1e6:.1f} us per task; "
        f"in memory + floor: {best:.2f}x"
    )
    print(
        f"  the store alone (write_nowait of one fenced task record): {alone * 1e6:.1f} us per task; "
        f"in memory + that: {(times[0] + alone * tasks) / times[0]:.2f}x"
    )
    times = await compare(chain(10), concurrent, runs)
    show(f"{concurrent} chains of 10 no-op tasks at once (commits shared), median of {runs}", *times)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=["memory", "sqlite", "null"], help="run one engine only, for callgrind")
    args = parser.parse_args()
    register(TASK)(noop)
    try:
        if args.only:
            asyncio.run(only(args.only, args.tasks, args.runs))
        else:
            asyncio.run(main(args.tasks, args.concurrent, args.runs))
    finally:
        TaskRegistry.unregister(TASK)
