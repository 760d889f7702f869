"""The queue scenario of issue 21 on DBOS Transact 3.x, for comparison with ``queue_tukio.py``.

Each run makes a fresh PostgreSQL database for DBOS's system tables (dropped
at the end) and starts 3 DBOS executors on it (this script with
``--worker``, each with its own ``executor_id``). Each registers the queue
``q`` with a global concurrency of ``--limit`` (``DBOS.register_queue``: in
this DBOS, ``Queue`` objects are not built directly), then, on the parent's
signal, enqueues ``--workflows / 3`` workflows as fast as it can (``--wave``
enqueues awaited at once). The workflow is one step doing nothing (or
waiting ``--hold`` ms). The parent polls ``dbos.workflow_status`` until
every workflow of the run has ended. Each step records, in a list of its
process written to a file at the end (never in DBOS), its workflow id, when
it was enqueued, when it started and when it ended (``time.time()``).

It prints, for each run and as medians: workflows per second (total / (the
last workflow's end in ``workflow_status`` - the first enqueue)), the most
steps running at once across the 3 executors, and p50 / p99 wait from
enqueue to the step's start. The reference, alternating with it, starts the
same workflows without a queue (``DBOS.start_workflow_async``: each runs in
the process that starts it).

Set up a separate virtual environment (dbos is not a dependency of tukio):

    /root/.pyenv/versions/3.11.7/bin/python -m venv /tmp/dbosenv && /tmp/dbosenv/bin/pip install dbos

then, from the repository root:

    /tmp/dbosenv/bin/python benchmarks/queue_dbos.py [--dsn DSN] [--workflows 15000] [--runs 3] [--limit 50]
        [--polling 1.0] [--hold 0] [--timeout 300]

``--dsn`` is where the databases are created and dropped (the ``test``
database of the local server by default). ``--polling`` is the queue's
``polling_interval_sec`` (DBOS's default, 1 s): each executor dequeues at
most once per interval. Every child process is SIGKILLed by its PID when a
run overruns ``--timeout``.
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
from datetime import datetime, timezone
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

import psycopg
from dbos import DBOS, DBOSConfig
from queue_common import Result, kill, line, median, read_message, summarize, tell

DSN = "postgresql://postgres@127.0.0.1:5432/test"
APP = "tukio-queue-bench"
QUEUE = "q"
PROCESSES = 3
#: DBOS's statuses of a workflow that ended.
ENDED = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
POLL = 0.05  # seconds between two looks at the system database

#: What the steps of this process ran: (workflow_id, enqueued, started, ended), each a time.time().
RECORDS: list[tuple[str | None, float, float, float]] = []
HOLD = 0.0  # seconds each step waits (--hold)


@DBOS.step()
async def body(enqueued: float) -> None:
    """Nothing (or wait ``--hold``), recording when it ran in this process's memory."""
    started = time.time()
    if HOLD:
        await asyncio.sleep(HOLD)
    RECORDS.append((DBOS.workflow_id, enqueued, started, time.time()))


@DBOS.workflow()
async def one_step(enqueued: float) -> None:
    await body(enqueued)


# -- worker (a child process) -----------------------------------------------------------------
def say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def worker(args: argparse.Namespace) -> None:
    """One DBOS executor: enqueue its share when told, then run until the parent says the run ended."""
    global HOLD
    HOLD = args.hold / 1000
    config: DBOSConfig = {
        "name": APP,
        "system_database_url": args.url,
        "executor_id": args.node,
        "log_level": "WARNING",
        "sys_db_pool_size": args.pool,
    }
    DBOS(config=config)
    DBOS.launch()
    if args.limit:
        DBOS.register_queue(QUEUE, global_concurrency=args.limit, polling_interval_sec=args.polling)
    asyncio.run(session(args))
    with open(args.records, "w") as f:
        json.dump(RECORDS, f)
    DBOS.destroy()


async def session(args: argparse.Namespace) -> None:
    say({"ready": args.node})
    await asyncio.to_thread(sys.stdin.readline)
    began = time.time()
    for at in range(0, args.count, args.wave):
        wave = range(at, min(at + args.wave, args.count))
        await asyncio.gather(*(start(args.limit) for _ in wave))
    say({"began": began, "enqueued": time.time()})
    await asyncio.to_thread(sys.stdin.read)  # until the parent closes it: every workflow ended


async def start(limit: int) -> None:
    """Enqueue one workflow (with a limit), or start it directly (the reference)."""
    if limit:
        await DBOS.enqueue_workflow_async(QUEUE, one_step, time.time())
    else:
        await DBOS.start_workflow_async(one_step, time.time())


# -- parent -----------------------------------------------------------------------------------


def database_url(dsn: str, name: str) -> str:
    return urlsplit(dsn)._replace(path=f"/{name}").geturl()


def admin(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)


def spawn(args: argparse.Namespace, url: str, node: str, limit: int, records: str) -> subprocess.Popen[bytes]:
    argv = [
        "--worker",
        "--url",
        url,
        "--node",
        node,
        "--limit",
        str(limit),
        "--count",
        str(args.workflows // PROCESSES),
    ]
    argv += ["--hold", str(args.hold), "--polling", str(args.polling), "--pool", str(args.pool)]
    argv += ["--wave", str(args.wave), "--records", records]
    # Unbuffered pipes: select() then sees every line the child wrote.
    return subprocess.Popen([sys.executable, __file__, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)


def wait_ended(url: str, total: int, children: list[subprocess.Popen[bytes]], deadline: float) -> tuple[float, int]:
    """Poll DBOS's workflow_status until `total` workflows ended: the last end (time.time()) and how many succeeded."""
    query = (
        "SELECT count(*) FILTER (WHERE status = ANY(%s)), count(*) FILTER (WHERE status = 'SUCCESS'), "
        "max(updated_at) FILTER (WHERE status = ANY(%s)) FROM dbos.workflow_status WHERE name LIKE %s"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(query, (list(ENDED), list(ENDED), f"%{one_step.__name__}")).fetchone()
            assert row is not None
            ended, finished, last = row
            if ended >= total:
                return last / 1000, finished
            if any(child.poll() is not None for child in children):
                raise RuntimeError(f"a worker exited with {ended} of {total} workflows ended")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ended} of {total} workflows ended before the timeout")
            time.sleep(POLL)


def start_workers(args: argparse.Namespace, url: str, limit: int, folder: str, deadline: float) -> list[Any]:
    """Start the executors, the first alone (its launch creates DBOS's tables), and wait until each is ready."""
    children = []
    for i in range(PROCESSES):
        children.append(spawn(args, url, f"n{i}", limit, os.path.join(folder, f"n{i}.json")))
        if i == 0:
            read_message(children[0], deadline)
    for child in children[1:]:
        read_message(child, deadline)
    return children


def run_once(args: argparse.Namespace, limit: int) -> Result:
    """One run on a fresh system database: 3 executors enqueue their share, the parent waits for every end."""
    name = f"dbos_bench_{uuid.uuid4().hex[:8]}"
    admin(args.dsn, f'CREATE DATABASE "{name}"')
    url = database_url(args.dsn, name)
    folder = tempfile.mkdtemp(prefix="dbos-queue-")
    total = args.workflows // PROCESSES * PROCESSES
    deadline = time.monotonic() + args.timeout
    children: list[subprocess.Popen[bytes]] = []
    try:
        children = start_workers(args, url, limit, folder, deadline)
        tell(children, b"go\n")
        began = min(read_message(child, deadline)["began"] for child in children)
        last_end, finished = wait_ended(url, total, children, deadline)
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
        admin(args.dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(args: argparse.Namespace) -> None:
    cases = {f"queue concurrency {args.limit}": args.limit, "no queue": 0}
    results: dict[str, list[Result]] = {name: [] for name in cases}
    print(
        f"DBOS {version('dbos')}: {args.workflows // PROCESSES * PROCESSES} one-step workflows, {PROCESSES} executors, "
        f"queue polling {args.polling} s, step hold {args.hold} ms, PostgreSQL {args.dsn}; "
        f"load average {os.getloadavg()[0]:.2f} at {datetime.now(timezone.utc):%H:%M} UTC"
    )
    for run in range(args.runs):
        for name, limit in cases.items():
            results[name].append(result := run_once(args, limit))
            print(f"run {run + 1}: {line(name, result, 'steps', 'succeeded')}", flush=True)
    print(f"medians of {args.runs} (most at once: the highest; steps, succeeded: the lowest):")
    for name, samples in results.items():
        print(f"  {line(name, median(samples), 'steps', 'succeeded')}")
    print(f"load average {os.getloadavg()[0]:.2f}")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=DSN, help="where the benchmark's databases are created and dropped")
    parser.add_argument("--workflows", type=int, default=15_000, help="workflows per run, all processes together")
    parser.add_argument("--runs", type=int, default=1, help="runs of each case, alternating")
    parser.add_argument("--limit", type=int, default=50, help="the queue's global concurrency")
    parser.add_argument("--polling", type=float, default=1.0, help="the queue's polling_interval_sec")
    parser.add_argument("--hold", type=float, default=0.0, help="milliseconds each step waits (0: a no-op)")
    parser.add_argument("--wave", type=int, default=100, help="enqueues awaited at once by each executor")
    parser.add_argument("--pool", type=int, default=10, help="sys_db_pool_size of each executor")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds a run may take; then its workers are killed"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--node", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--records", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.worker:
        worker(arguments)
    else:
        main(arguments)
