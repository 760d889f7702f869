"""Crash recovery for real: SIGKILL a process running workflows, recover in a new one.

Each run starts a worker that runs a few workflows on a SQLiteStore and kills
it with SIGKILL at a random moment; a second worker recovers. Every workflow
the store knows must then have ended with the result of an uninterrupted run,
and no task whose end was recorded before the kill may have run again.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from crash_worker import expected

from tukio.store import SQLiteStore

WORKER = str(Path(__file__).with_name("crash_worker.py"))
RUNS = 24
WORKFLOWS = 3
STATS: Counter[str] = Counter()


def worker(*args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(WORKER).parent), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.Popen([sys.executable, WORKER, *args], stdout=subprocess.PIPE, text=True, env=env)


def ran(side: Path) -> Counter[tuple[str, str]]:
    if not side.exists():
        return Counter()
    return Counter(tuple(line.split()) for line in side.read_text().splitlines())  # type: ignore[misc]


def recorded_done(path: Path) -> set[tuple[str, str]]:
    """(exec id, task id) of every task whose end the store holds."""
    done = set()
    with SQLiteStore(path) as store:
        for info in store.executions():
            for task in store.load(info.exec_id)["tasks"]:
                if task["exec"] is not None and task["exec"]["state"] in ("finished", "exception", "timeout"):
                    done.add((info.exec_id, task["id"]))
    return done


def one_run(tmp: Path, rng: random.Random) -> None:
    path, side = tmp / "journal.db", tmp / "ran.txt"
    proc = worker("run", str(path), str(side), str(WORKFLOWS))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    time.sleep(rng.uniform(0.0, 0.03))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    STATS["killed" if proc.returncode == -signal.SIGKILL else "finished before the kill"] += 1
    before = recorded_done(path)
    ran_before = ran(side)
    STATS["tasks recorded done at the kill"] += len(before)
    recovery = worker("recover", str(path), str(side))
    out, _ = recovery.communicate(timeout=30)
    assert recovery.returncode == 0, out
    STATS["workflows recovered"] += int(out.split()[-1])
    counts = ran(side)
    STATS["tasks run again"] += sum(counts[k] - ran_before[k] for k in ran_before if counts[k] > ran_before[k])
    # At least once per task, and never again once its end was recorded.
    for key in before - {(e, "j") for e, _ in before}:  # the join task writes nothing
        assert counts[key] == 1, f"task {key} ran {counts[key]} times though its end was recorded"
    with SQLiteStore(path) as store:
        assert store.unfinished() == []
        for info in store.executions():
            report = store.load(info.exec_id)
            assert info.state == "finished", report
            z = {t["id"]: t["exec"] for t in report["tasks"]}["z"]
            assert z["outputs"] == expected(report["exec"]["event"]["n"])
            assert all(counts[info.exec_id, t] >= 1 for t in ("r", "x", "x2", "y", "z"))


@pytest.mark.slow
def test_sigkill_then_recover(tmp_path: Path) -> None:
    rng = random.Random(os.environ.get("TUKIO_CRASH_SEED", "tukio"))
    start = time.monotonic()
    for i in range(RUNS):
        run_dir = tmp_path / f"run-{i}"
        run_dir.mkdir()
        one_run(run_dir, rng)
    STATS["seconds"] = round(time.monotonic() - start)
    assert STATS["killed"] >= RUNS // 2, STATS
    sys.stderr.write(f"crash test: {dict(STATS)}\n")
