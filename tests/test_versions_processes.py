"""A rolling upgrade with processes: two versions of one template on one journal (issue 20).

Node A runs version 1 (a -> b -> c) and is SIGKILLed while task b runs.
Node C runs version 2 (b renamed b2, a new d after a) without v1's task
name ``vw-b``: it does not claim A's executions, and lists them as
unrecovered with the reason. Node B runs version 2 with every task name:
it finishes A's executions on version 1 while it starts new ones on
version 2. No task runs on the wrong version (each task records what it ran).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from version_worker import version

from tukio.store import PostgresStore, SQLiteStore, Store

WORKER = str(Path(__file__).with_name("version_worker.py"))
V1, V2 = version(1).version, version(2).version


def worker(
    spec: str, side: Path, node: str, number: int, mode: str, count: int, *without: str
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(WORKER).parent), os.environ.get("PYTHONPATH")])),
    }
    args = [sys.executable, WORKER, spec, str(side), node, str(number), mode, str(count)]
    if without:
        args.append(",".join(without))
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen[str]) -> list[str]:
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, out
    return out.splitlines()


@pytest.fixture(params=["sqlite", "postgres"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Store]]:
    """(the workers' store spec, a store on the same journal for the test)."""
    if request.param == "sqlite":
        path = tmp_path / "journal.db"
        with SQLiteStore(path) as store:
            yield f"sqlite:{path}", store
    else:
        dsn, schema = request.getfixturevalue("pg_schema")
        with PostgresStore(dsn, schema=schema) as store:
            yield f"postgres:{dsn}#{schema}", store


def ran(side: Path) -> dict[str, list[tuple[str, str, str]]]:
    """By execution: (task id, version, node) of each task run."""
    found: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for line in side.read_text().splitlines():
        exec_id, tid, ver, node = line.split()
        found[exec_id].append((tid, ver, node))
    return found


def test_a_rolling_upgrade_finishes_old_executions_on_their_version(journal: tuple[str, Store], tmp_path: Path) -> None:
    spec, store = journal
    side = tmp_path / "ran.txt"
    a = worker(spec, side, "node-a", 1, "park", 3)
    try:
        assert a.stdout is not None
        assert a.stdout.readline().strip() == "READY"
    finally:
        a.send_signal(signal.SIGKILL)
        a.communicate(timeout=10)
    old = {info.exec_id for info in store.unfinished()}
    assert len(old) == 3
    assert {info.version for info in store.unfinished()} == {V1}

    # C cannot run version 1 (no task named vw-b): it leaves A's executions alone, and says why.
    lines = finish(worker(spec, side, "node-c", 2, "stranded", 1, "vw-b"))
    stranded = {line.split()[1]: line for line in lines if line.startswith("UNRECOVERED")}
    assert set(stranded) == old
    assert all(f"its template version {V1} cannot run here" in line and "vw-b" in line for line in stranded.values())
    assert {info.exec_id for info in store.unfinished()} == old

    # B can: it finishes them on version 1, and runs its own on version 2.
    lines = finish(worker(spec, side, "node-b", 2, "finish", 2))
    assert lines[-1] == "DONE"
    assert store.unfinished() == []
    runs = ran(side)
    for info in store.executions():
        assert info.state == "finished", info
        tasks = runs[info.exec_id]
        assert {ver for _, ver, _ in tasks} == {info.version}  # nothing ran on another version
        if info.exec_id in old:
            assert info.version == V1
            assert sorted(tid for tid, _, _ in tasks) == ["a", "b", "b", "c"]  # b again: A died in it
            assert [node for tid, _, node in tasks if tid == "c"] == ["node-b"]
            assert [t["id"] for t in store.load(info.exec_id)["tasks"]] == ["a", "b", "c"]
        else:
            assert info.version == V2
            assert sorted(tid for tid, _, _ in tasks) == ["a", "b2", "c", "d"]
    assert len(runs) == 3 + 1 + 2
    assert store.versions() == {V1: "vw", V2: "vw"}
