"""Soak test: many two-task workflows through one engine journaling to SQLite.

Runs `--workflows` workflows (a task and its successor, each returning a
small dict) through one `Engine(store=SQLiteStore(...))`, `--concurrency` of
them at a time, and samples the process's resident memory, the size of the
write-ahead log and of the database file as it goes. With `--prune` (the
default) the executions that ended before the previous sample are pruned at
each sample, as a long-running service would, while the engine keeps running.

At the end it prints the largest WAL seen, then the file sizes after pruning
everything and after `SQLiteStore.vacuum()`. All of it should stay flat after
the warm-up; a figure that climbs sample after sample is a leak.

Not run in CI (10^6 workflows take several minutes):

    python benchmarks/soak.py [--workflows 1000000] [--concurrency 100] [--samples 20] [--no-prune] [--db PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from tukio import Engine, Event, WorkflowTemplate, register
from tukio.store import SQLiteStore

TASK = "soak-step"
MB = 1024 * 1024


@register(TASK)
async def step(event: Event) -> dict[str, object]:
    """A task that adds a small field to its inputs."""
    return {**event.data, "seen": len(event.data)}


def two_tasks() -> WorkflowTemplate:
    """The template every workflow runs: a -> b."""
    tasks = [{"id": "a", "name": TASK}, {"id": "b", "name": TASK}]
    return WorkflowTemplate.from_dict({"id": "soak", "tasks": tasks, "graph": {"a": ["b"]}})


def rss() -> int:
    """Resident memory of this process, in bytes (the peak where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def size(path: str) -> int:
    """Size of a file in bytes (0 when it does not exist)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class Sampler:
    """Prints one line per sample and keeps the largest WAL seen."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.start = time.perf_counter()
        self.last = (self.start, 0)
        self.max_wal = 0
        print(f"{'workflows':>10} {'seconds':>8} {'wf/s':>7} {'RSS MB':>7} {'WAL MB':>7} {'DB MB':>7} {'pruned':>8}")

    def sample(self, done: int, pruned: int) -> None:
        now = time.perf_counter()
        rate = (done - self.last[1]) / (now - self.last[0]) if now > self.last[0] else 0.0
        self.last = (now, done)
        wal = size(self.path + "-wal")
        self.max_wal = max(self.max_wal, wal)
        print(
            f"{done:>10} {now - self.start:>8.1f} {rate:>7.0f} {rss() / MB:>7.1f} {wal / MB:>7.2f}"
            f" {size(self.path) / MB:>7.2f} {pruned:>8}",
            flush=True,
        )


async def soak(path: str, workflows: int, concurrency: int, samples: int, prune: bool) -> None:
    """Run the workflows and print the samples."""
    template = two_tasks()
    store = SQLiteStore(path)
    engine = Engine(store=store)
    sampler = Sampler(path)
    every = max(1, workflows // samples)
    done = 0
    failed = 0
    cutoff: datetime | None = None
    pruning: asyncio.Task[int] | None = None
    pruned = 0
    next_sample = asyncio.Event()
    numbers = iter(range(workflows))

    async def feeder() -> None:
        nonlocal done, failed
        for i in numbers:
            workflow = await engine.run_once(template, {"n": i})
            assert workflow is not None
            await workflow
            if workflow.exception() is not None or any(t.exception() is not None for t in workflow.tasks):
                failed += 1
            done += 1
            if done % every == 0:
                next_sample.set()

    feeders = asyncio.gather(*(feeder() for _ in range(concurrency)))
    while not feeders.done():
        waiter = asyncio.ensure_future(next_sample.wait())
        await asyncio.wait([feeders, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        next_sample.clear()
        if pruning is not None and pruning.done():
            pruned += pruning.result()
            pruning = None
        gc.collect()
        sampler.sample(done, pruned)
        if prune and pruning is None:
            if cutoff is not None:
                pruning = asyncio.ensure_future(asyncio.to_thread(store.prune, before=cutoff))
            cutoff = datetime.now(timezone.utc)
    await feeders
    await engine.stop()
    if pruning is not None:
        pruned += await pruning
    print(f"\n{done} workflows ({failed} failed) in {time.perf_counter() - sampler.start:.1f} s")
    print(f"largest WAL seen: {sampler.max_wal / MB:.2f} MB")
    print(f"database: {size(path) / MB:.2f} MB, WAL: {size(path + '-wal') / MB:.2f} MB, RSS: {rss() / MB:.1f} MB")
    left = len(store.executions())
    removed = store.prune()
    print(f"after prune() of {removed} of {left} executions: database {size(path) / MB:.2f} MB", end="")
    print(f", WAL {size(path + '-wal') / MB:.2f} MB")
    store.vacuum()
    print(f"after vacuum(): database {size(path) / MB:.2f} MB, WAL {size(path + '-wal') / MB:.2f} MB")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workflows", type=int, default=1_000_000, help="how many workflows to run (10^6)")
    parser.add_argument("--concurrency", type=int, default=100, help="workflows running at once (100)")
    parser.add_argument("--samples", type=int, default=20, help="how many samples to print (20)")
    parser.add_argument("--no-prune", dest="prune", action="store_false", help="never prune while running")
    parser.add_argument("--db", help="the database file (a temporary one when omitted)")
    args = parser.parse_args()
    if args.db is not None:
        asyncio.run(soak(args.db, args.workflows, args.concurrency, args.samples, args.prune))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(soak(str(Path(tmp) / "soak.db"), args.workflows, args.concurrency, args.samples, args.prune))


if __name__ == "__main__":
    main()
