"""One engine process of the fault-injection suite (see chaos_harness.py).

    python chaos_worker.py CONFIG NODE

CONFIG is a JSON file: ``store`` ("pg" or "sqlite"), ``dsn`` and ``schema``
(PostgreSQL) or ``db`` (SQLite), ``lease``, ``logs`` (a directory) and
``life`` (seconds this process lives at most). The environment may add
``TUKIO_CHAOS_DSN`` (this node's own DSN: through the proxy) and
``TUKIO_CHAOS_CLOCK`` (seconds added to this process's ``time.time()``).

The engine, named NODE, loads the suite's templates, resumes what it may,
prints READY, then obeys one command per line of its standard input:
``dag N``, ``skip N`` and ``limit N`` trigger those templates with ``{"n": N}``,
``listen`` starts a workflow whose task listens on topic "news", ``publish
E`` calls ``data_received({"e": E}, "news")``, ``quit`` stops the engine.

Every task body records each run in ``runs-NODE-PID.jsonl`` (one JSON
object per line, written at once, outside the journal): ``start`` (with the
inputs), ``end`` (with the outputs), ``got`` (an event a listening task
received); the process adds ``ack`` (a trigger returned), ``published``
(data_received returned). Times are on the host's boot clock, which every
process shares and the clock fault leaves alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

#: Seconds added to time.time() (a node whose clock is off); applied before tukio is imported.
CLOCK = float(os.environ.get("TUKIO_CHAOS_CLOCK", "0"))
if CLOCK:
    _real_time = time.time
    time.time = lambda: _real_time() + CLOCK

from tukio import Engine, Event, Workflow, register  # noqa: E402

NODE = ""
LOG = -1
_runs = itertools.count()
#: Set once a listening task runs in this process.
LISTENING = asyncio.Event()
#: Publications happen in the order the harness asked for them (see chaos_harness._settle).
PUBLISHING = asyncio.Lock()

#: A DAG with a join: a -> (b, c) -> d (join) -> e.
DAG: dict[str, Any] = {
    "id": "chaos-dag",
    "policy": "start-new",
    "topics": [],
    "tasks": [{"id": t, "name": "chaos-step"} for t in "abce"] + [{"id": "d", "name": "chaos-join"}],
    "graph": {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": ["e"], "e": []},
}
#: One instance at most, across the nodes.
SKIP: dict[str, Any] = {
    "id": "chaos-skip",
    "policy": "skip",
    "topics": [],
    "tasks": [{"id": "s", "name": "chaos-step", "config": {"slow": True}}],
    "graph": {},
}
#: A task that gets every event published on "news" until the harness's "stop/k/m" events.
LISTEN: dict[str, Any] = {
    "id": "chaos-listen",
    "policy": "start-new",
    "topics": [],
    "tasks": [{"id": "l", "name": "chaos-listen", "topics": ["news"]}],
    "graph": {},
}
#: At most two executions at once, across the nodes (flow control's queue in the store).
LIMIT: dict[str, Any] = {
    "id": "chaos-limit",
    "policy": "start-new",
    "concurrency": 2,
    "topics": [],
    "tasks": [{"id": "q", "name": "chaos-step", "config": {"slow": True}}],
    "graph": {},
}
TEMPLATES = (DAG, SKIP, LISTEN, LIMIT)


def now() -> float:
    """The clock every process of the host shares (boot time; monotonic elsewhere)."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


def record(kind: str, **fields: Any) -> None:
    """Append one line to this process's run log, at once (it survives a SIGKILL)."""
    line = json.dumps({"k": kind, "node": NODE, "pid": os.getpid(), "t": now(), **fields}, sort_keys=True)
    os.write(LOG, line.encode() + b"\n")


@contextlib.contextmanager
def tracked(exec_id: str, tid: str, uid: str, run: str, inputs: Any) -> Iterator[None]:
    """Record a run's start, and its end when it ends without returning (cancelled, failed)."""
    record("start", exec=exec_id, task=tid, uid=uid, run=run, inputs=inputs)
    try:
        yield
    except BaseException as exc:
        record("stopped", exec=exec_id, task=tid, run=run, why=type(exc).__name__)
        raise


def _running() -> tuple[str, str, str, str]:
    """(execution id, task id, task uid, a token naming this run)."""
    workflow = Workflow.current_workflow()
    task: Any = asyncio.current_task()
    assert workflow is not None
    return workflow.uid, task.template.uid, task.uid, f"{NODE}/{os.getpid()}/{next(_runs)}"


@register("chaos-step")
async def step(event: Event) -> dict[str, Any]:
    """Record the run, work a little (seeded by the run), return a token of this run."""
    exec_id, tid, uid, run = _running()
    slow = bool((asyncio.current_task().template.config or {}).get("slow"))  # type: ignore[union-attr]
    with tracked(exec_id, tid, uid, run, event.data):
        await asyncio.sleep(random.Random(run).uniform(0.2, 0.4) if slow else random.Random(run).uniform(0.05, 0.25))
    outputs = {"run": run, "task": tid}
    record("end", exec=exec_id, task=tid, uid=uid, run=run, outputs=outputs)
    return outputs


@register("chaos-join")
async def join(event: Event) -> dict[str, Any]:
    """Wait for the second parent's data, record the run with both inputs, return a token of this run."""
    exec_id, tid, uid, run = _running()
    inputs = [event.data]
    queue = asyncio.current_task().queue  # type: ignore[union-attr]
    while len(inputs) < 2:
        inputs.append((await queue.get()).data)
    inputs.sort(key=lambda data: str(data.get("task")))
    with tracked(exec_id, tid, uid, run, inputs):
        await asyncio.sleep(random.Random(run).uniform(0.05, 0.25))
    outputs = {"run": run, "task": tid}
    record("end", exec=exec_id, task=tid, uid=uid, run=run, outputs=outputs)
    return outputs


@register("chaos-listen")
async def listen(event: Event) -> dict[str, Any]:
    """Record each event on "news" until "stop"; return them in the order they came."""
    exec_id, tid, uid, run = _running()
    queue = asyncio.current_task().queue  # type: ignore[union-attr]
    got: list[Any] = []
    stops: set[str] = set()
    LISTENING.set()
    with tracked(exec_id, tid, uid, run, event.data):
        while True:
            seen = (await queue.get()).data.get("e")
            record("got", exec=exec_id, task=tid, run=run, e=seen)
            if not seen.startswith("stop/"):
                got.append(seen)
                continue
            # "stop/k/m": the harness published m of them, one per node; every event published
            # before reaches this task before the stops of the other nodes (ids grow in order).
            stops.add(seen)
            if len(stops) == int(seen.split("/")[2]):
                break
    outputs = {"run": run, "task": tid, "got": got}
    record("end", exec=exec_id, task=tid, uid=uid, run=run, outputs=outputs)
    return outputs


def make_store(config: dict[str, Any]) -> Any:
    """The store CONFIG names, for this node."""
    if config["store"] == "pg":
        from tukio.store.postgres import PostgresStore

        dsn = os.environ.get("TUKIO_CHAOS_DSN", config["dsn"])
        return PostgresStore(dsn, schema=config["schema"], server_settings={"application_name": NODE}, timeout=5)
    from tukio.store import SQLiteStore

    return SQLiteStore(config["db"])


async def obey(engine: Engine, command: str) -> None:
    """Carry out one command of the harness; record its acknowledgement."""
    word, _, arg = command.partition(" ")
    if word in ("dag", "skip", "listen", "limit"):
        template = {"dag": DAG, "skip": SKIP, "listen": LISTEN, "limit": LIMIT}[word]["id"]
        workflow = await engine.trigger(template, {"n": int(arg or 0)})
        record("ack", template=template, n=int(arg or 0), exec=None if workflow is None else workflow.uid)
        if word == "listen":
            await LISTENING.wait()
            sys.stdout.write("LISTENING\n")
            sys.stdout.flush()
    elif word == "publish":
        async with PUBLISHING:
            await engine.data_received({"e": arg}, topic="news")
            record("published", e=arg)


async def main(config: dict[str, Any]) -> None:
    store = await asyncio.to_thread(make_store, config)
    engine = Engine(store=store, node=NODE, lease=config["lease"])
    for template in TEMPLATES:
        await engine.load(template)
    await engine.recover()
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:  # a daemon thread: it may block on its input when the process ends
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, "quit")

    threading.Thread(target=read, daemon=True).start()
    running: set[asyncio.Task[None]] = set()
    while (line := await lines.get()) != "quit":
        task = asyncio.ensure_future(obey(engine, line))
        running.add(task)
        task.add_done_callback(running.discard)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(engine.stop(), 5)
    await asyncio.to_thread(store.close)


if __name__ == "__main__":
    import logging

    with open(sys.argv[1], encoding="utf-8") as f:
        CONFIG = json.load(f)
    NODE = sys.argv[2]
    logging.basicConfig(level=logging.WARNING, format=f"{NODE} %(asctime)s %(levelname)s %(name)s %(message)s")
    LOG = os.open(
        os.path.join(CONFIG["logs"], f"runs-{NODE}-{os.getpid()}.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT
    )
    with contextlib.suppress(asyncio.TimeoutError):
        asyncio.run(asyncio.wait_for(main(CONFIG), CONFIG["life"]))
