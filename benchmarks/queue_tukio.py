"""The queue scenario of issue 21 on PostgreSQL: 3 engines, one template with ``"concurrency": 50``.

Each run makes a fresh schema (dropped at the end) and starts 3 engine
processes on it (this script with ``--worker``). Each loads a one-task
template (a no-op body) with ``"concurrency": --limit``, then, on the
parent's signal, triggers ``--workflows / 3`` workflows as fast as it can
(``--wave`` triggers awaited at once, 500 by default). The parent polls the store until every
execution of the run has ended. Each body records, in a list of its process
written to a file at the end (never in the journal), its execution id, when
it was triggered, when it started and when it ended (``time.time()``).

From those records and the store it prints, for each run and as medians:

- workflows per second: total / (the last execution's end in the store -
  the first trigger);
- the most bodies running at once across the 3 processes (a sweep over the
  start and end events); must not exceed the limit once the limit is
  cluster-wide (until then each engine applies it to its own executions);
- p50 and p99 wait from trigger to the body's start.

The same run without a limit (plain durable one-step workflows) alternates
with it, as the reference. A no-op body ends in the loop turn it starts in,
so bodies barely overlap and the most-at-once figure says little about the
limit: ``--hold 20`` makes each body wait 20 ms, which shows it.

    python benchmarks/queue_tukio.py [--dsn DSN] [--workflows 15000] [--runs 3] [--limit 50] [--hold 0] [--timeout 300]

Every child process is SIGKILLed by its PID when a run overruns ``--timeout``.
(Not named ``queue.py``: run as a script, its folder comes first on
``sys.path``, and a ``queue.py`` there would shadow the standard library's
``queue`` for every benchmark of the folder.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from typing import Any

import asyncpg
from queue_common import Result, kill, line, median, read_message, summarize, tell

from tukio import Engine, Event, Workflow, WorkflowTemplate, register
from tukio.store.postgres import PostgresStore

DSN = "postgresql://postgres@127.0.0.1:5432/test"
TEMPLATE = "bench-queue"
BODY = "bench-queue-body"
PROCESSES = 3
#: Triggers awaited at once by each engine (with a store, concurrent triggers share commits).
WAVE = 500
#: The states of an execution that ended.
ENDED = ("finished", "exception", "cancelled", "timeout")
POLL = 0.05  # seconds between two looks at the store

#: What the bodies of this process ran: (exec_id, triggered, started, ended), each a time.time().
RECORDS: list[tuple[str, float, float, float]] = []
HOLD = 0.0  # seconds each body waits (--hold)


@register(BODY)
async def body(event: Event) -> None:
    """Nothing (or wait ``--hold``), recording when it ran in this process's memory."""
    started = time.time()
    if HOLD:
        await asyncio.sleep(HOLD)
    wf = Workflow.current_workflow()
    assert wf is not None
    RECORDS.append((str(wf.uid), event.data["t0"], started, time.time()))


def template(limit: int) -> WorkflowTemplate:
    """The one-task template, with ``"concurrency": limit`` (0: no limit)."""
    fields = {"concurrency": limit} if limit else {}
    return WorkflowTemplate.from_dict(
        {"id": TEMPLATE, "policy": "start-new", "tasks": [{"id": "body", "name": BODY}], **fields}
    )


# -- worker (a child process) -----------------------------------------------------------------
def say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def worker(args: argparse.Namespace) -> None:
    """One engine: trigger its share when told, then wait for the parent to say the run ended."""
    global HOLD
    HOLD = args.hold / 1000
    store = await asyncio.to_thread(PostgresStore, args.dsn, schema=args.schema)
    engine = Engine(store=store, node=args.node, lease=5)
    await engine.load(template(args.limit))
    say({"ready": args.node})
    await asyncio.to_thread(sys.stdin.readline)
    began = time.time()
    for at in range(0, args.count, args.wave):
        wave = range(at, min(at + args.wave, args.count))
        await asyncio.gather(*(engine.trigger(TEMPLATE, {"t0": time.time()}) for _ in wave))
    say({"began": began, "triggered": time.time()})
    await asyncio.to_thread(sys.stdin.read)  # until the parent closes it: every execution ended
    await engine.stop()
    store.close()
    await asyncio.to_thread(write_records, args.records)


def write_records(path: str) -> None:
    with open(path, "w") as f:
        json.dump(RECORDS, f)


# -- parent -----------------------------------------------------------------------------------


def spawn(args: argparse.Namespace, schema: str, node: str, limit: int, records: str) -> subprocess.Popen[bytes]:
    argv = ["--worker", "--dsn", args.dsn, "--schema", schema, "--node", node, "--limit", str(limit)]
    argv += ["--count", str(args.workflows // PROCESSES), "--hold", str(args.hold), "--records", records]
    argv += ["--wave", str(args.wave)]
    # Unbuffered pipes: select() then sees every line the child wrote.
    return subprocess.Popen([sys.executable, __file__, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)


async def wait_ended(
    dsn: str, schema: str, total: int, children: list[subprocess.Popen[bytes]], deadline: float
) -> tuple[float, int]:
    """Poll the store until `total` executions ended: the last end (time.time()) and how many finished."""
    conn = await asyncpg.connect(dsn)
    query = (
        "SELECT count(*) FILTER (WHERE state = ANY($1::text[])), count(*) FILTER (WHERE state = 'finished'), "
        f'max(ended) FILTER (WHERE state = ANY($1::text[])) FROM "{schema}".executions'
    )
    try:
        while True:
            ended, finished, last = await conn.fetchrow(query, list(ENDED))
            if ended >= total:
                return datetime.fromisoformat(last).timestamp(), finished
            if any(child.poll() is not None for child in children):
                raise RuntimeError(f"a worker exited with {ended} of {total} executions ended")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ended} of {total} executions ended before the timeout")
            await asyncio.sleep(POLL)
    finally:
        await conn.close()


def sql(dsn: str, query: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(query)
        finally:
            await conn.close()

    asyncio.run(go())


def run_once(args: argparse.Namespace, limit: int) -> Result:
    """One run in a fresh schema: 3 engines trigger their share, the parent waits for every end."""
    schema = f"bench_queue_{uuid.uuid4().hex[:8]}"
    PostgresStore(args.dsn, schema=schema).close()
    folder = tempfile.mkdtemp(prefix="tukio-queue-")
    total = args.workflows // PROCESSES * PROCESSES
    deadline = time.monotonic() + args.timeout
    children: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(PROCESSES):
            children.append(spawn(args, schema, f"n{i}", limit, os.path.join(folder, f"n{i}.json")))
        for child in children:
            read_message(child, deadline)
        tell(children, b"go\n")
        began = min(read_message(child, deadline)["began"] for child in children)
        last_end, finished = asyncio.run(wait_ended(args.dsn, schema, total, children, deadline))
        tell(children, None)
        for child in children:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        records = []
        for i in range(PROCESSES):
            with open(os.path.join(folder, f"n{i}.json")) as f:
                records += json.load(f)
        return summarize(records, began, last_end, total, finished)
    finally:
        kill(children)
        shutil.rmtree(folder, ignore_errors=True)
        sql(args.dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main(args: argparse.Namespace) -> None:
    cases = {f"concurrency {args.limit}": args.limit, "no limit": 0}
    results: dict[str, list[Result]] = {name: [] for name in cases}
    print(
        f"{args.workflows // PROCESSES * PROCESSES} one-step workflows, {PROCESSES} engines, body hold "
        f"{args.hold} ms, PostgreSQL {args.dsn}; load average {os.getloadavg()[0]:.2f}"
    )
    for run in range(args.runs):
        for name, limit in cases.items():
            results[name].append(result := run_once(args, limit))
            print(f"run {run + 1}: {line(name, result)}", flush=True)
    print(f"medians of {args.runs} (most at once: the highest; bodies, finished: the lowest):")
    for name, samples in results.items():
        print(f"  {line(name, median(samples))}")
    print(f"load average {os.getloadavg()[0]:.2f}")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--workflows", type=int, default=15_000, help="workflows per run, all processes together")
    parser.add_argument("--runs", type=int, default=1, help="runs of each case, alternating")
    parser.add_argument("--limit", type=int, default=50, help="the template's concurrency")
    parser.add_argument("--hold", type=float, default=0.0, help="milliseconds each body waits (0: a no-op)")
    parser.add_argument("--wave", type=int, default=WAVE, help="triggers each engine awaits at once")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds a run may take; then its workers are killed"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    parser.add_argument("--node", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--records", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.worker:
        asyncio.run(worker(arguments))
    else:
        main(arguments)
