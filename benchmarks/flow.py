"""What flow control costs and what it gives, in one process (no store).

    python benchmarks/flow.py [--triggers 20000] [--runs 5] [--queue 20000] [--flood 5000]

Prints, each a median of ``--runs`` runs alternating the cases so that they
see the same machine:

- **limit not reached**: seconds per `Engine.trigger` of a one-step no-op
  template, without flow settings, with ``"concurrency"`` far above what
  runs, and with a ``"rate"`` far above the trigger rate; each ratio is to
  the template without one (the triggers are timed, then the workflows
  awaited);
- **queue throughput**: ``--queue`` one-step workflows triggered at once on a
  template with ``"concurrency": 50``: workflows per second from the first
  trigger to the last end, and the most executions seen running at once
  (counted by the tasks themselves, each workflow being one task: never
  above 50); and the same
  workflows on the template without a limit (all running at once);
- **fairness**: 10 keys on a template with ``"concurrency_key"`` (5 per
  key) on an engine with ``max_running=10``, each task taking about 1 ms;
  key 0 floods ``--flood`` triggers at once, then, while they are
  processed, keys 1-9 send one trigger each every 2 ms (100 rounds); the
  p50 and p99 wait (from trigger to the task's start) of keys 1-9 and of
  the flooding key, and, for comparison, the same keys' p99 on a plain FIFO
  queue (``"concurrency": 10``, no key), where they wait behind the flood.

``--only cost --case none|concurrency|rate`` runs just the triggers of one
case, ``--runs`` times, and prints nothing: under
``valgrind --tool=callgrind``, the difference between two ``--triggers``
values, divided by the triggers it adds, is the instructions per trigger.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from tukio import Engine, TaskRegistry, WorkflowTemplate, register

NOOP = "bench-flow-noop"
PROBE = "bench-flow-probe"


async def noop(data: object) -> None:
    """A task that does nothing."""


class Probe:
    """A task that records how long its trigger waited, and how many ran at once."""

    def __init__(self) -> None:
        self.running = 0
        self.waits: dict[Any, list[float]] = {}
        self.peak = 0
        self.pause = 0.0  # seconds each task takes

    async def task(self, event: Any) -> None:
        data = event.data
        self.waits.setdefault(data.get("customer"), []).append(time.perf_counter() - data["t0"])
        # Each workflow is this one task: the tasks running now are the executions running now.
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.pause)
        finally:
            self.running -= 1


PROBE_TASK = Probe()


def template(uid: str, task: str, **fields: Any) -> WorkflowTemplate:
    return WorkflowTemplate.from_dict(
        {"id": uid, "policy": "start-new", "tasks": [{"id": "a", "name": task}], **fields}
    )


async def trigger_cost(fields: dict[str, Any], triggers: int) -> float:
    """Seconds per trigger of `triggers` triggers (the workflows are awaited after the timing)."""
    engine = Engine()
    await engine.load(template("cost", NOOP, **fields))
    start = time.perf_counter()
    started = [await engine.trigger("cost", {"i": i}) for i in range(triggers)]
    elapsed = time.perf_counter() - start
    await asyncio.gather(*(w for w in started if w is not None))
    await engine.stop()
    return elapsed / triggers


async def queue_throughput(count: int, limit: int | None) -> tuple[float, int]:
    """Workflows per second through a queue of concurrency `limit` (None: no limit), and the peak seen running."""
    engine = Engine()
    PROBE_TASK.peak, PROBE_TASK.waits = 0, {}
    await engine.load(template("queue", PROBE, **({"concurrency": limit} if limit is not None else {})))
    start = time.perf_counter()
    started = [await engine.trigger("queue", {"t0": start, "template": "queue"}) for _ in range(count)]
    await asyncio.gather(*(w for w in started if w is not None))
    elapsed = time.perf_counter() - start
    await engine.stop()
    return count / elapsed, PROBE_TASK.peak


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fairness(flood: int, keyed: bool) -> tuple[list[float], list[float]]:
    """Waits (seconds) of the quiet keys and of the flooding key.

    Key 0 sends `flood` triggers at once; then, while they are processed,
    keys 1-9 send one trigger each every 2 ms, 100 rounds. Each task takes
    about 1 ms.
    """
    engine = Engine(max_running=10)
    PROBE_TASK.waits, PROBE_TASK.pause = {}, 0.001
    fields: dict[str, Any] = {"concurrency": 5, "concurrency_key": "customer"} if keyed else {"concurrency": 10}
    await engine.load(template("fair", PROBE, **fields))
    started = [
        await engine.trigger("fair", {"customer": 0, "t0": time.perf_counter(), "template": "fair"})
        for _ in range(flood)
    ]
    for _ in range(100):
        for customer in range(1, 10):
            data = {"customer": customer, "t0": time.perf_counter(), "template": "fair"}
            started.append(await engine.trigger("fair", data))
        await asyncio.sleep(0.002)
    await asyncio.gather(*(w for w in started if w is not None))
    await engine.stop()
    PROBE_TASK.pause = 0.0
    quiet = [w for customer, waits in PROBE_TASK.waits.items() if customer != 0 for w in waits]
    return quiet, PROBE_TASK.waits[0]


CASES: dict[str, dict[str, Any]] = {
    "none": {},
    "concurrency": {"concurrency": 10**9},
    "rate": {"rate": {"limit": 10**9, "period": 1}},
}


async def main(args: argparse.Namespace) -> None:
    register(NOOP)(noop)
    register(PROBE)(PROBE_TASK.task)
    try:
        if args.only == "cost":
            for _ in range(args.runs):
                await trigger_cost(CASES[args.case], args.triggers)
            return
        cases = {
            "no limit": CASES["none"],
            "concurrency not reached": CASES["concurrency"],
            "rate not reached": CASES["rate"],
        }
        costs: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, fields in cases.items():
                costs[name].append(await trigger_cost(fields, args.triggers))
        base = statistics.median(costs["no limit"])
        print(f"limit not reached ({args.triggers} triggers, median of {args.runs}):")
        for name, samples in costs.items():
            median = statistics.median(samples)
            print(f"  {name:<25} {median * 1e6:7.2f} us/trigger  ratio {median / base:.3f}")
        rates, peaks, unlimited = [], [], []
        for _ in range(args.runs):
            rate, peak = await queue_throughput(args.queue, 50)
            rates.append(rate)
            peaks.append(peak)
            unlimited.append((await queue_throughput(args.queue, None))[0])
        print(
            f"queue, concurrency 50, {args.queue} workflows: {statistics.median(rates):,.0f} workflows/s "
            f"(median of {args.runs}), most running at once: {max(peaks)}; "
            f"the same workflows with no limit: {statistics.median(unlimited):,.0f} workflows/s"
        )
        fair = [await fairness(args.flood, keyed=True) for _ in range(args.runs)]
        fifo = [await fairness(args.flood, keyed=False) for _ in range(args.runs)]
        quiet_p99 = statistics.median(percentile(q, 0.99) for q, _ in fair)
        quiet_p50 = statistics.median(percentile(q, 0.50) for q, _ in fair)
        flood_p99 = statistics.median(percentile(f, 0.99) for _, f in fair)
        fifo_p99 = statistics.median(percentile(q, 0.99) for q, _ in fifo)
        print(
            f"fairness, key 0 floods {args.flood}, keys 1-9 send 100 each meanwhile "
            f"(max_running=10, 5 per key, 1 ms tasks):\n"
            f"  keys 1-9 wait p50 {quiet_p50 * 1e3:.1f} ms, p99 {quiet_p99 * 1e3:.1f} ms; "
            f"flooding key p99 {flood_p99 * 1e3:.1f} ms\n"
            f"  the same keys on a plain FIFO queue (concurrency 10, no key): p99 {fifo_p99 * 1e3:.1f} ms"
        )
    finally:
        TaskRegistry.unregister(NOOP)
        TaskRegistry.unregister(PROBE)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--triggers", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--queue", type=int, default=20_000)
    parser.add_argument("--flood", type=int, default=5_000)
    parser.add_argument("--only", choices=["cost"])
    parser.add_argument("--case", choices=sorted(CASES), default="none")
    asyncio.run(main(parser.parse_args()))
