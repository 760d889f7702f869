"""What the queue benchmarks share (``queue_tukio.py``, ``queue_dbos.py``): their children and their figures.

Standard library only: ``queue_dbos.py`` runs in a virtual environment of
its own, without tukio.
"""

from __future__ import annotations

import json
import os
import select
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Result", "kill", "line", "median", "most_at_once", "percentile", "read_message", "summarize", "tell"]


@dataclass
class Result:
    """One run's figures."""

    rate: float  # workflows per second
    peak: int  # most bodies (DBOS: steps) running at once
    p50_ms: float  # wait from trigger (enqueue) to start
    p99_ms: float
    bodies: int  # bodies run (more than the workflows: some ran twice)
    finished: int


def read_message(child: subprocess.Popen[bytes], deadline: float) -> dict[str, Any]:
    """The next JSON line the child prints (others are its libraries'); raises if it exits or the deadline passes."""
    assert child.stdout is not None
    while True:
        ready, _, _ = select.select([child.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError(f"worker {child.pid} said nothing before the timeout")
        text = child.stdout.readline()
        if not text:
            raise RuntimeError(f"worker {child.pid} exited with {child.wait()}")
        if text.startswith(b"{"):
            message: dict[str, Any] = json.loads(text)
            return message


def tell(children: list[subprocess.Popen[bytes]], line: bytes | None) -> None:
    """Write `line` to every child, or close their stdin (None)."""
    for child in children:
        assert child.stdin is not None
        if line is None:
            child.stdin.close()
        else:
            child.stdin.write(line)
            child.stdin.flush()


def kill(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()


def most_at_once(records: list[list[Any]]) -> int:
    """The most bodies running at once: a sweep over starts (+1) and ends (-1), ends first on a tie."""
    events = sorted([(r[2], 1) for r in records] + [(r[3], -1) for r in records])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(records: list[list[Any]], began: float, last_end: float, total: int, finished: int) -> Result:
    waits = [(started - triggered) * 1000 for _, triggered, started, _ in records]
    return Result(
        rate=total / (last_end - began),
        peak=most_at_once(records),
        p50_ms=percentile(waits, 0.50),
        p99_ms=percentile(waits, 0.99),
        bodies=len(records),
        finished=finished,
    )


def median(results: list[Result]) -> Result:
    return Result(
        rate=statistics.median(r.rate for r in results),
        peak=max(r.peak for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        bodies=min(r.bodies for r in results),
        finished=min(r.finished for r in results),
    )


def line(name: str, r: Result, bodies: str = "bodies", finished: str = "finished") -> str:
    """One result on one line; `bodies` and `finished` name those counts."""
    return (
        f"{name:<22} {r.rate:8,.0f} workflows/s  most at once {r.peak:5}  "
        f"wait p50 {r.p50_ms:9.1f} ms  p99 {r.p99_ms:9.1f} ms  ({bodies} {r.bodies}, {finished} {r.finished})"
    )
