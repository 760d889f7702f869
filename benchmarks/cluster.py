"""Several engines on one PostgreSQL journal: throughput, latency, failover, memory.

Against a PostgreSQL (``--dsn``, default the local one; ``synchronous_commit``
as the server has it, on by default), in a schema of its own dropped at the
end, it measures:

- one-step durable workflows per second with 1 and 3 engine processes
  (each triggering 500 at a time: a trigger returns once its begin record
  is committed, and concurrent triggers share commits);
- one durable chain of 1,000 tasks (every task waits for its parent's end
  to be committed): milliseconds per task;
- failover: 3 engine processes run 1,000 workflows; one is SIGKILLed
  mid-run; the time until its first workflow runs again on another node,
  the time until all 1,000 are finished, and how many tasks ran twice
  (only those running on the killed node may);
- the memory of a parked durable workflow (its root task waits).

    python benchmarks/cluster.py [--dsn DSN] [--workflows 5000] [--lease 2] [--only chain,throughput]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import asyncpg

from tukio import Engine, Event, Workflow, WorkflowTemplate, register
from tukio.store.postgres import PostgresStore

DSN = "postgresql://postgres@127.0.0.1:5432/test"
SIDE: Any = None  # the pool the failover tasks record their starts with
GATE: asyncio.Event | None = None
#: Triggers made at once in the throughput run (each returns once its begin record is committed).
WAVE = 500


@register("bench-cluster-noop")
async def noop(event: Event) -> None:
    """Nothing: the cost measured is the engine's and the journal's."""


@register("bench-cluster-park")
async def park(event: Event) -> None:
    """Wait until released (a parked workflow)."""
    assert GATE is not None
    await GATE.wait()


@register("bench-cluster-step")
async def step(event: Event) -> dict[str, Any]:
    """Record the start in the side table, then work for 50 ms."""
    wf = Workflow.current_workflow()
    assert wf is not None
    tid = asyncio.current_task().template.uid  # type: ignore[union-attr]
    await SIDE.execute(
        "INSERT INTO starts VALUES ($1, $2, $3, clock_timestamp())", wf.uid, tid, os.environ["BENCH_NODE"]
    )
    await asyncio.sleep(0.05)
    return {**event.data, tid: os.environ["BENCH_NODE"]}


def template(uid: str, task: str, steps: int = 1) -> WorkflowTemplate:
    ids = [f"t{i}" for i in range(steps)]
    return WorkflowTemplate.from_dict(
        {
            "id": uid,
            "policy": "start-new",
            "tasks": [{"id": t, "name": task} for t in ids],
            "graph": {a: [b] for a, b in itertools.pairwise(ids)},
        }
    )


# -- workers (run as child processes) ---------------------------------------------------------
async def throughput_worker(dsn: str, schema: str, node: str, count: int, start_at: float) -> None:
    store = await asyncio.to_thread(PostgresStore, dsn, schema=schema)
    engine = Engine(store=store, node=node, lease=5)
    tmpl = template("one-step", "bench-cluster-noop")
    await engine.load(tmpl)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    began = time.time()
    workflows: list[Workflow | None] = []
    for at in range(0, count, WAVE):  # a trigger returns once its begin is committed: WAVE share commits
        wave = range(at, min(at + WAVE, count))
        workflows += await asyncio.gather(*(engine.trigger("one-step", {"n": i}) for i in wave))
    await asyncio.gather(*(w for w in workflows if w is not None))
    await engine.stop()  # every record committed
    print(json.dumps({"began": began, "ended": time.time()}), flush=True)
    store.close()


async def failover_worker(dsn: str, schema: str, node: str, count: int, lease: float) -> None:
    global SIDE
    os.environ["BENCH_NODE"] = node
    SIDE = await asyncpg.create_pool(dsn, min_size=2, max_size=8, server_settings={"search_path": schema})
    store = await asyncio.to_thread(PostgresStore, dsn, schema=schema)
    engine = Engine(store=store, node=node, lease=lease)
    await engine.load(template("chain3", "bench-cluster-step", 3))
    for i in range(count):
        await engine.trigger("chain3", {"n": i})
    print("READY", flush=True)
    await asyncio.Event().wait()


# -- measurements (in the parent) -------------------------------------------------------------
def spawn(*argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )


def sql(dsn: str, query: str, *args: Any) -> list[Any]:
    async def go() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


def fresh(dsn: str) -> str:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    PostgresStore(dsn, schema=schema).close()
    return schema


def drop(dsn: str, schema: str) -> None:
    sql(dsn, f'DROP SCHEMA "{schema}" CASCADE')


def throughput(dsn: str, procs: int, total: int) -> float:
    schema = fresh(dsn)
    try:
        start_at = time.time() + 3.0  # every process starts at once, after its imports
        children = [
            spawn("throughput-worker", dsn, schema, f"n{i}", str(total // procs), str(start_at)) for i in range(procs)
        ]
        stamps = []
        for child in children:
            out, _ = child.communicate(timeout=600)
            stamps.append(json.loads(out.strip().splitlines()[-1]))
        finished = sql(dsn, f"SELECT count(*) FROM \"{schema}\".executions WHERE state = 'finished'")[0][0]
        assert finished == total // procs * procs, finished
        seconds = max(s["ended"] for s in stamps) - min(s["began"] for s in stamps)
        return finished / seconds
    finally:
        drop(dsn, schema)


async def commit_floor(dsn: str, commits: int = 300, sync: str = "on") -> float:
    """Milliseconds of one bare insert of one row and its commit (asyncpg, same loop): the floor of a durable step."""
    schema = await asyncio.to_thread(fresh, dsn)
    conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": sync})
    try:
        await conn.execute(f'CREATE TABLE "{schema}".floor (k text PRIMARY KEY, v bytea)')
        query = f'INSERT INTO "{schema}".floor VALUES ($1, $2)'
        began = time.perf_counter()
        for i in range(commits):
            await conn.execute(query, f"t{i}", b'{"inputs":null,"outputs":null}')
        return (time.perf_counter() - began) / commits * 1000
    finally:
        await conn.close()
        await asyncio.to_thread(drop, dsn, schema)


async def chain_latency(dsn: str, tasks: int, sync: str = "on") -> float:
    schema = await asyncio.to_thread(fresh, dsn)
    try:
        store = await asyncio.to_thread(PostgresStore, dsn, schema=schema, server_settings={"synchronous_commit": sync})
        engine = Engine(store=store, node="chain", lease=5)
        tmpl = template("chain", "bench-cluster-noop", tasks)
        best = []
        for _ in range(3):
            began = time.perf_counter()
            wf = await engine.run_once(tmpl, {})
            assert wf is not None
            await wf
            await engine.flush()
            best.append((time.perf_counter() - began) / tasks * 1000)
        await engine.stop()
        store.close()
        return statistics.median(best)
    finally:
        await asyncio.to_thread(drop, dsn, schema)


def failover(dsn: str, total: int, lease: float) -> dict[str, Any]:
    schema = fresh(dsn)
    sql(dsn, f'CREATE TABLE "{schema}".starts (exec_id text, task_id text, node text, at timestamptz)')
    children = {}
    try:
        for i in range(3):
            children[f"n{i}"] = spawn("failover-worker", dsn, schema, f"n{i}", str(total // 3), str(lease))
        for child in children.values():
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "READY"
        while sql(dsn, f"SELECT count(*) FROM \"{schema}\".starts WHERE node = 'n1'")[0][0] < 100:
            time.sleep(0.01)
        killed_at = sql(dsn, "SELECT clock_timestamp()")[0][0]
        os.kill(children["n1"].pid, signal.SIGKILL)
        children["n1"].wait()
        q = (
            f'SELECT min(s.at) FROM "{schema}".starts s JOIN "{schema}".executions e USING (exec_id) '
            f"WHERE s.node <> 'n1' AND s.at > $1 AND EXISTS (SELECT 1 FROM \"{schema}\".starts x "
            "WHERE x.exec_id = s.exec_id AND x.node = 'n1')"
        )
        while (again := sql(dsn, q, killed_at)[0][0]) is None:
            time.sleep(0.01)
        while sql(dsn, f"SELECT count(*) FROM \"{schema}\".executions WHERE state = 'finished'")[0][0] < total // 3 * 3:
            time.sleep(0.05)
        all_done = sql(dsn, "SELECT clock_timestamp()")[0][0]
        twice = sql(
            dsn,
            f"SELECT count(*), bool_and(first = 'n1') FROM (SELECT exec_id, task_id, count(*) AS n, "
            f'(array_agg(node ORDER BY at))[1] AS first FROM "{schema}".starts GROUP BY 1, 2) t WHERE n > 1',
        )[0]
        return {
            "killed_to_running_elsewhere_s": (again - killed_at).total_seconds(),
            "killed_to_all_finished_s": (all_done - killed_at).total_seconds(),
            "tasks_run_twice": twice[0],
            "all_twice_were_running_on_the_killed_node": bool(twice[1]) if twice[0] else True,
        }
    finally:
        for child in children.values():
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
            child.wait()
        drop(dsn, schema)


async def parked_memory(dsn: str, count: int) -> float:
    global GATE
    GATE = asyncio.Event()
    schema = await asyncio.to_thread(fresh, dsn)
    try:
        store = await asyncio.to_thread(PostgresStore, dsn, schema=schema)
        engine = Engine(store=store, node="park", lease=5)
        tmpl = template("park", "bench-cluster-park")
        await engine.load(tmpl)
        warm = [await engine.trigger("park", {"n": -1})]
        await engine.flush()
        before = _rss()
        parked = [await engine.trigger("park", {"n": i}) for i in range(count)]
        await engine.flush()
        await asyncio.sleep(0.2)
        per = (_rss() - before) / count
        GATE.set()
        await asyncio.gather(*(w for w in parked + warm if w is not None))
        await engine.stop()
        store.close()
        return per
    finally:
        await asyncio.to_thread(drop, dsn, schema)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "throughput-worker":
        dsn, schema, node, count, start_at = sys.argv[2:7]
        asyncio.run(throughput_worker(dsn, schema, node, int(count), float(start_at)))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "failover-worker":
        dsn, schema, node, count, lease = sys.argv[2:7]
        asyncio.run(failover_worker(dsn, schema, node, int(count), float(lease)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--workflows", type=int, default=6000, help="one-step workflows per throughput run")
    parser.add_argument("--chain", type=int, default=1000, help="tasks in the durable chain")
    parser.add_argument("--failover", type=int, default=1000, help="workflows in the failover run")
    parser.add_argument("--lease", type=float, default=2.0, help="lease of the failover nodes (seconds)")
    parser.add_argument("--parked", type=int, default=2000, help="parked workflows for the memory measure")
    parser.add_argument(
        "--only",
        default="throughput,chain,failover,memory",
        help="the measures to run, comma-separated (throughput, chain, failover, memory)",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    sync = sql(args.dsn, "SHOW synchronous_commit")[0][0]
    print(f"PostgreSQL at {args.dsn}, synchronous_commit={sync}")
    for procs in (1, 3) if "throughput" in only else ():
        rate = throughput(args.dsn, procs, args.workflows)
        print(f"one-step durable workflows/s, {procs} process(es): {rate:,.0f}  (target >= 5,000)")
    for sync in ("on", "off") if "chain" in only else ():
        floor = asyncio.run(commit_floor(args.dsn, sync=sync))
        ms = asyncio.run(chain_latency(args.dsn, args.chain, sync))
        print(
            f"durable chain of {args.chain} tasks, synchronous_commit={sync}: {ms:.3f} ms/task  (target <= 0.5); "
            f"a bare insert + commit of one row takes {floor:.3f} ms"
        )
    if "failover" in only:
        report_failover(failover(args.dsn, args.failover, args.lease), args.failover, args.lease)
    if "memory" in only:
        per = asyncio.run(parked_memory(args.dsn, args.parked))
        print(f"memory per parked durable workflow: {per / 1024:.1f} KiB")


def report_failover(result: dict[str, Any], workflows: int, lease: float) -> None:
    print(
        f"failover, {workflows} workflows on 3 nodes, lease {lease}s, one SIGKILLed: "
        f"running elsewhere after {result['killed_to_running_elsewhere_s']:.2f}s (target <= lease + 1s), "
        f"all finished {result['killed_to_all_finished_s']:.2f}s after the kill, "
        f"{result['tasks_run_twice']} task(s) ran twice "
        f"(all were running on the killed node: {result['all_twice_were_running_on_the_killed_node']})"
    )


if __name__ == "__main__":
    main()
