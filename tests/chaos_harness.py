"""The fault-injection suite's harness: engine processes, a seeded schedule of work and faults, the checker.

`run(Scenario(store, fault, seed), workdir)` starts `nodes` worker
processes (chaos_worker.py) on one journal (a PostgreSQL schema of its own,
or one SQLite file), starts a listening workflow on each, then for `feed`
seconds sends them triggers of a DAG with a join and of a 'skip' template,
and events on the listened topic, on a schedule drawn from `seed`, while
injecting faults of one kind on a schedule drawn from the same seed:

- ``kill``: SIGKILL a node; restart it under the same name, or a new one;
- ``stop``: SIGSTOP a node past its lease, then SIGCONT;
- ``conn``: terminate one node's database sessions (``pg_terminate_backend``);
- ``proxy``: one node reaches PostgreSQL through chaos_proxy.py, which adds
  latency, resets its connections, and drops everything past the lease;
- ``restart``: restart the (private) PostgreSQL server as a crash would;
- ``clock``: one node's ``time.time()`` is 10 s off (ahead or behind);
- ``none``: no fault (the baseline).

Then the faults stop, every execution is waited for, each listening task
gets its "stop" events, the workers quit, and `chaos_check.check` reads
the run logs and the journal. Every process and server is bounded in time
and stopped by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chaos_check import Faults, Journal, Window, check, read_runs

HERE = Path(__file__).resolve().parent
FAULTS = ("none", "kill", "stop", "conn", "proxy", "restart", "clock")
#: Faults only PostgreSQL has (sessions, a server, a network path).
PG_ONLY = frozenset({"conn", "proxy", "restart"})
#: The lease of the fault kinds that need another than 1 s: a restarted server is back within it
#: (so no node may be taken for dead meanwhile).
LEASES = {"restart": 10.0}
#: Seconds a PostgreSQL store waits at most between two attempts to reconnect (its MAX_BACKOFF).
RECONNECT = 2.0
#: Seconds the harness waits for a worker to start or listen before giving up.
PATIENCE = 30.0


@dataclass(frozen=True)
class Scenario:
    """One seeded run: a store, a fault kind and a seed (the rest has defaults sized for CI)."""

    store: str
    fault: str
    seed: int
    nodes: int = 3
    feed: float = 2.5
    #: The nodes' lease (0: the fault kind's own, `LEASES`).
    lease: float = 0.0
    rate: float = 30.0
    #: Seconds the executions have to end once the faults stopped (what has not ended then is a violation).
    settle: float = 8.0

    def __post_init__(self) -> None:
        if self.store not in ("pg", "sqlite"):
            raise ValueError(f"store must be 'pg' or 'sqlite', got {self.store!r}")
        if self.fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}, got {self.fault!r}")
        if self.store == "sqlite" and self.fault in PG_ONLY:
            raise ValueError(f"fault {self.fault!r} needs PostgreSQL")
        if not self.lease:
            object.__setattr__(self, "lease", LEASES.get(self.fault, 1.0))


@dataclass
class Outcome:
    """What a run found: its violations, and how much it did."""

    violations: list[str]
    executions: int = 0
    runs: int = 0
    events: int = 0
    faults: int = 0


def now() -> float:
    """The shared clock of the run logs (see chaos_worker.now)."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


@dataclass
class _Node:
    name: str
    proc: asyncio.subprocess.Process
    paused: bool = False


@dataclass
class _Fleet:
    """The worker processes of one run, by node name; each stopped by its PID."""

    scenario: Scenario
    config: Path
    env: dict[str, dict[str, str]]
    nodes: dict[str, _Node] = field(default_factory=dict)
    deaths: dict[int, float] = field(default_factory=dict)
    done: Faults = field(default_factory=Faults)
    faults: int = 0
    every: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def start(self, name: str) -> None:
        log = open(self.config.parent / f"{name}.err", "a")  # noqa: SIM115, ASYNC230 - the child writes it
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "chaos_worker.py"),
            str(self.config),
            name,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env={**os.environ, "PYTHONPATH": str(HERE), **self.env.get(name, {})},
        )
        log.close()
        self.every.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), PATIENCE)
        if line.strip() != b"READY":
            raise RuntimeError(f"worker {name} did not start: {line!r}; see {self.config.parent / f'{name}.err'}")
        self.nodes[name] = _Node(name, proc)

    async def listen(self, name: str) -> None:
        """Start a listening workflow on `name`; return once its task listens."""
        self.send(name, "listen")
        stdout = self.nodes[name].proc.stdout
        assert stdout is not None
        line = await asyncio.wait_for(stdout.readline(), PATIENCE)
        if line.strip() != b"LISTENING":
            raise RuntimeError(f"worker {name} does not listen: {line!r}")

    def send(self, name: str, command: str) -> bool:
        node = self.nodes.get(name)
        if node is None or node.paused or node.proc.returncode is not None:
            return False
        assert node.proc.stdin is not None
        try:
            node.proc.stdin.write(command.encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def live(self) -> list[str]:
        return [n for n, node in self.nodes.items() if not node.paused and node.proc.returncode is None]

    async def kill(self, name: str) -> None:
        node = self.nodes.pop(name)
        node.proc.send_signal(signal.SIGKILL)
        self.deaths[node.proc.pid] = now()
        self.done.killed.add(node.proc.pid)
        await node.proc.wait()

    def pause(self, name: str, paused: bool) -> None:
        node = self.nodes[name]
        node.proc.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)
        node.paused = paused

    async def quit(self) -> None:
        """Ask every worker to stop, then kill by PID what is left."""
        for name in list(self.nodes):
            self.send(name, "quit")
        for proc in self.every:
            if proc.returncode is None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), 10)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.kill()
                await proc.wait()
            self.deaths.setdefault(proc.pid, now())


class _Database:
    """The journal of one run: a schema of its own (or a private server), or an SQLite file."""

    def __init__(self, scenario: Scenario, workdir: Path, dsn: str | None) -> None:
        self.scenario = scenario
        self.server: Any = None
        self.db = str(workdir / "journal.db")
        self.schema = f"chaos_{uuid.uuid4().hex[:10]}"
        self.dsn = dsn or ""
        if scenario.store == "pg" and scenario.fault == "restart":
            from pg import PrivateServer

            self.server = PrivateServer()
            self.dsn = self.server.dsn

    def store(self) -> Any:
        if self.scenario.store == "pg":
            from tukio.store.postgres import PostgresStore

            return PostgresStore(self.dsn, schema=self.schema)
        from tukio.store import SQLiteStore

        return SQLiteStore(self.db)

    def config(self) -> dict[str, Any]:
        return {"store": self.scenario.store, "dsn": self.dsn, "schema": self.schema, "db": self.db}

    def unfinished(self) -> int:
        """How many executions are unfinished (running, or waiting in flow control's queue)."""
        from tukio.store.base import QUEUED, UNFINISHED

        with self.store() as store:
            return len(store.executions(state=(UNFINISHED, QUEUED)))

    def journal(self) -> Journal:
        """The journal as the store reads it back."""
        journal = Journal()
        with self.store() as store:
            for info in store.executions():
                journal.templates[info.exec_id] = info.template_id or ""
                journal.states[info.exec_id] = info.state
                for task in store.load(info.exec_id)["tasks"]:
                    done = task.get("exec") or {}
                    if done.get("state") == "finished" and done.get("outputs") is not None:
                        journal.outputs[info.exec_id, task["id"]] = done["outputs"]
        return journal

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        elif self.scenario.store == "pg":
            from pg import drop_schema

            drop_schema(self.schema)


def run(scenario: Scenario, workdir: Path, dsn: str | None = None) -> Outcome:
    """Run `scenario` in `workdir` (PostgreSQL at `dsn`, unless the fault needs a private server).

    Returns:
        The violations found, and counts of what ran.

    Raises:
        RuntimeError: a worker did not start, or the executions did not end in time
            (the workers' stderr is in `workdir`).
    """
    database = _Database(scenario, workdir, dsn)
    try:
        database.store().close()  # created and migrated once, before the workers race
        return asyncio.run(_run(scenario, workdir, database))
    finally:
        database.close()


async def _run(scenario: Scenario, workdir: Path, database: _Database) -> Outcome:
    rng = random.Random(f"{scenario.store}/{scenario.fault}/{scenario.seed}")
    names = [f"n{i}" for i in range(scenario.nodes)]
    env: dict[str, dict[str, str]] = {}
    proxy = None
    if scenario.fault == "clock":
        env[names[-1]] = {"TUKIO_CHAOS_CLOCK": str(rng.choice((-10, 10)))}
    if scenario.fault == "proxy":
        port = urlsplit(database.dsn).port or 5432
        proxy = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "chaos_proxy.py"), str(port), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proxy.stdout is not None
        mine = int((await asyncio.wait_for(proxy.stdout.readline(), PATIENCE)).split()[1])
        url = urlsplit(database.dsn)
        env[names[-1]] = {"TUKIO_CHAOS_DSN": url._replace(netloc=f"{url.username}@127.0.0.1:{mine}").geturl()}
    config = workdir / "config.json"
    life = scenario.feed + scenario.settle + 3 * PATIENCE
    config.write_text(json.dumps({**database.config(), "lease": scenario.lease, "logs": str(workdir), "life": life}))
    fleet = _Fleet(scenario, config, env)
    try:
        await asyncio.gather(*(fleet.start(name) for name in names))
        await asyncio.gather(*(fleet.listen(name) for name in names))
        faults = asyncio.ensure_future(_inject(scenario, fleet, database, rng, proxy))
        events = await _feed(scenario, fleet, rng)
        await faults
        await _settle(fleet, database)
        await fleet.quit()
    finally:
        await fleet.quit()
        if proxy is not None and proxy.returncode is None:
            proxy.kill()
            await proxy.wait()
    return _judge(workdir, fleet, database, events)


async def _feed(scenario: Scenario, fleet: _Fleet, rng: random.Random) -> int:
    """Send triggers and events to live nodes for `feed` seconds; return how many events were sent."""
    events = 0
    ends = now() + scenario.feed
    n = 0
    while now() < ends:
        live = fleet.live()
        if live:
            target, roll, n = rng.choice(live), rng.random(), n + 1
            if roll < 0.4:
                fleet.send(target, f"dag {n}")
            elif roll < 0.65:
                fleet.send(target, f"skip {n}")
            elif roll < 0.8:
                fleet.send(target, f"limit {n}")
            elif fleet.send(target, f"publish e{n}"):
                events += 1
        await asyncio.sleep(rng.expovariate(scenario.rate))
    return events


async def _inject(scenario: Scenario, fleet: _Fleet, database: _Database, rng: random.Random, proxy: Any) -> None:
    """The faults of the scenario's kind, at seeded times within the feed."""
    start, lease, feed = now(), scenario.lease, scenario.feed

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, start + fraction * feed - now()))

    victims = sorted(fleet.nodes)
    if scenario.fault == "kill":
        kills = max(2, round(feed / 1.25))
        for k in range(kills):
            await at((k + rng.uniform(0.1, 0.5)) / kills)
            victim = rng.choice(sorted(fleet.live()))
            await fleet.kill(victim)
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            await fleet.start(victim if k % 2 == 0 else f"{victim}-r{k}")  # the same name, then a new one
            fleet.faults += 1
    elif scenario.fault == "stop":
        pauses = max(1, round(feed / 2.5))
        for k in range(pauses):
            await at((k + rng.uniform(0.05, 0.2)) / pauses)
            victim = rng.choice(victims)
            paused = now()
            fleet.pause(victim, True)
            await asyncio.sleep(lease * rng.uniform(1.5, 2.5))
            fleet.pause(victim, False)
            fleet.done.windows.append(Window(victim, paused, now() + lease))
            fleet.faults += 1
    elif scenario.fault == "conn":
        await _kill_sessions(fleet, database, rng, start + feed)
    elif scenario.fault == "proxy":
        await _misbehave(fleet, proxy, rng, lease, at)
    elif scenario.fault == "restart":
        await at(rng.uniform(0.3, 0.5))
        began = now()
        await asyncio.to_thread(database.server.restart, "immediate")
        # A lease renewed a third of it before the restart, then a node reconnecting up to RECONNECT
        # late: slower than that, leases may have run out meanwhile.
        if now() - began > lease * 2 / 3 - RECONNECT - 0.5:
            fleet.done.windows.append(Window(None, began, now() + lease))
        fleet.faults += 1


async def _kill_sessions(fleet: _Fleet, database: _Database, rng: random.Random, until: float) -> None:
    import asyncpg

    conn = await asyncpg.connect(database.dsn, timeout=5)
    query = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = $1 AND pid <> pg_backend_pid()"
    )
    try:
        while now() < until:
            await asyncio.sleep(rng.uniform(0.1, 0.4))
            fleet.faults += await conn.fetchval(query, rng.choice(sorted(fleet.nodes)))
    finally:
        await conn.close()


async def _misbehave(fleet: _Fleet, proxy: Any, rng: random.Random, lease: float, at: Any) -> None:
    victim = sorted(fleet.nodes)[-1]

    def obey(command: str) -> None:
        proxy.stdin.write(command.encode() + b"\n")
        fleet.faults += 1

    await at(rng.uniform(0.05, 0.15))
    obey(f"latency {rng.uniform(0.02, 0.1):.3f}")
    await at(rng.uniform(0.25, 0.3))
    obey("reset")
    await at(rng.uniform(0.35, 0.4))
    dropped = now()
    obey("drop")
    await asyncio.sleep(lease * rng.uniform(1.5, 2.0))
    obey("reset")  # the silent connections end; new ones go through
    fleet.done.windows.append(Window(victim, dropped, now() + lease))


async def _settle(fleet: _Fleet, database: _Database) -> None:
    """Wait until no execution is left unfinished, `settle` seconds at most.

    Each listening task ends once it got the m "stop/k/m" events, one per
    live node. They are published again every second: a listening task
    taken over from a lost node may resume only after the first ones (it
    misses what was published meanwhile: its node was cut off).
    """
    live = fleet.live()
    stops = [f"publish stop/{k}/{len(live)}" for k in range(len(live))]
    deadline = now() + fleet.scenario.settle
    polls = 0
    while True:
        if polls % 3 == 0:
            live = fleet.live()
            for k, stop in enumerate(stops):
                fleet.send(live[k % len(live)], stop)
        if not await asyncio.to_thread(database.unfinished):
            return
        if now() > deadline:
            return  # the checker names what did not end
        await asyncio.sleep(0.3)
        polls += 1


def _judge(workdir: Path, fleet: _Fleet, database: _Database, events: int) -> Outcome:
    lines = []
    for path in sorted(workdir.glob("runs-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    runs, others = read_runs(lines, fleet.deaths)
    journal = database.journal()
    violations = check(runs, others, journal, fleet.done)
    return Outcome(violations, len(journal.states), len(runs), events, fleet.faults)
