"""The journal builds a task's record from the task's fields: the same record, text and blob as from its entry."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from support import template

import tukio._report as report_module
from tukio import Engine, Event, TaskHolder, Workflow
from tukio._report import iso, iso_from_timestamp, storable, utc
from tukio.store import MemoryStore, SQLiteStore
from tukio.store.journal import Journal


def _times() -> list[float]:
    rng = random.Random(11)
    now = 1_764_000_000.0
    values = [0.0, 1.0, 1.5, -1.25, -1e-7, -0.0000004, now, now + 0.5, 2_000_000_000.999999]
    for second in (0, 1, 1_000_000_000, 1_700_000_000, 1_764_633_600, 4_102_444_799):
        for micros in (0, 1, 499_999, 500_000, 999_999):
            values.append(second + micros / 1e6)
        for offset in (0.0000005, 0.0000015, 0.0000025, 0.9999994, 0.9999995, 0.9999996, 0.99999999):
            values.append(second + offset)  # halfway and just-under-a-second cases
            values.append(math.nextafter(second + offset, math.inf))
            values.append(math.nextafter(second + offset, -math.inf))
    values += [rng.uniform(0, 4_000_000_000) for _ in range(3000)]
    values += [now + rng.randrange(1_000_000) / 1e6 for _ in range(2000)]  # whole microseconds
    values += [math.floor(now) + rng.randrange(5) for _ in range(50)]  # microseconds 0
    return values


def test_iso_from_timestamp_writes_what_the_datetime_path_writes() -> None:
    for value in _times():
        assert iso_from_timestamp(value) == iso(utc(value)), value
    assert iso_from_timestamp(None) is None


def test_iso_from_timestamp_caches_one_second_and_moves_on() -> None:
    first = iso_from_timestamp(1_700_000_000.25)
    assert first == "2023-11-14T22:13:20.250000+00:00"
    assert iso_from_timestamp(1_700_000_000.0) == "2023-11-14T22:13:20.000000+00:00"  # cached second
    assert iso_from_timestamp(1_700_000_000.9999996) == "2023-11-14T22:13:21.000000+00:00"  # rounds up
    assert iso_from_timestamp(1_700_000_061.5) == "2023-11-14T22:14:21.500000+00:00"
    assert report_module._second[0] == 1_700_000_061.0


def test_iso_from_timestamp_refuses_what_datetime_refuses() -> None:
    with pytest.raises((OverflowError, ValueError, OSError)):
        iso_from_timestamp(1e20)
    with pytest.raises(ValueError, match="NaN"):
        iso_from_timestamp(math.nan)


class Reporting(TaskHolder):
    async def run(self, event: Event) -> dict[str, Any]:
        return {"seen": event.data}

    def report(self) -> Any:
        if self.config.get("broken"):
            raise RuntimeError("no report")
        return {"rows": 3, "config": self.config}


@pytest.fixture
def names(registered: Callable[..., Any], task_name: Callable[[str], str]) -> dict[str, str]:
    async def echo(event: Event) -> Any:
        return None

    async def fail(event: Event) -> Any:
        raise ValueError("bad input \udcff")

    async def cancel(event: Event) -> Any:
        raise asyncio.CancelledError

    out = {}
    for role, fn in (("echo", echo), ("fail", fail), ("cancel", cancel)):
        out[role] = task_name(role)
        registered(out[role], fn)
    out["holder"] = task_name("holder")
    registered(out["holder"], Reporting, "run")
    return out


async def _ran(names: dict[str, str], store: Any) -> tuple[Workflow, Journal]:
    tmpl = template(
        [
            ("a", names["echo"]),
            ("h", names["holder"], {"config": {"k": "v"}}),
            ("broken", names["holder"], {"config": {"broken": True}}),
            ("f", names["fail"]),
            ("c", names["cancel"]),
        ],
        {"a": ["h", "broken", "f", "c"]},
    )
    engine = Engine(store=store)
    wf = await engine.run_once(tmpl, {"x": [1, "é"]})
    assert wf is not None
    await asyncio.wait_for(asyncio.wait([wf]), 5)
    await engine.stop()
    recorder = wf.recorder
    assert isinstance(recorder, Journal)
    return wf, recorder


async def test_a_task_record_from_its_fields_equals_the_one_from_its_entry(names: dict[str, str]) -> None:
    wf, journal = await _ran(names, MemoryStore())
    states = {}
    for tid, task in wf.tasks_by_id.items():
        assert wf.entry_is_the_tasks(tid)
        entry = wf.task_entry(tid)
        assert entry is not None
        states[tid] = entry["state"]
        fast, refused = journal._task_record(wf, tid, task, running=False)
        assert refused is None
        assert fast == journal._task(wf, tid, entry)[0]
        # As written while it runs: pending, no end, outputs or error.
        running = {**entry, "state": "pending", "end": None, "outputs": None}
        running.pop("error", None)
        assert journal._task_record(wf, tid, task, running=True)[0] == journal._task(wf, tid, running)[0]
    assert states == {"a": "finished", "h": "finished", "broken": "finished", "f": "exception", "c": "cancelled"}


async def test_a_task_record_names_a_field_the_serializer_refuses(names: dict[str, str]) -> None:
    wf, journal = await _ran(names, MemoryStore())
    task = wf.tasks_by_id["a"]
    task.outputs = {"bad": {1, 2}}
    record, refused = journal._task_record(wf, "a", task, running=False)
    assert refused is not None
    assert "its outputs (dict) cannot be stored" in refused
    assert (record.state, record.error) == ("exception", refused)
    assert '"outputs":null' in str(record.data)


async def test_what_is_stored_reads_back_as_the_live_report(names: dict[str, str], tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "journal.db") as store:
        wf, _ = await _ran(names, store)
        stored = store.load(wf.uid)
        [info] = store.executions()
    live = wf.report()
    assert info.exec_id == wf.uid
    for mine, theirs in zip(stored["tasks"], live["tasks"], strict=True):
        want = dict(theirs["exec"])
        got = dict(mine["exec"])
        for key in ("start", "end"):
            assert isinstance(got[key], datetime)
            assert got.pop(key) == want.pop(key)  # to the microsecond
        if "error" in want:
            want["error"] = storable(want["error"])  # a lone surrogate is escaped when stored
        assert got == want
    assert stored["tasks"][1]["exec"]["reporting"] == {"rows": 3, "config": {"k": "v"}}
    assert stored["tasks"][2]["exec"]["reporting"] == "report() failed: RuntimeError: no report"
    assert stored["tasks"][3]["exec"]["error"] == "ValueError: bad input \\udcff"
    assert stored["exec"]["start"] - live["exec"]["start"] < timedelta(seconds=1)
    assert stored["exec"]["start"].tzinfo == timezone.utc


async def test_a_running_task_record_from_its_fields_equals_the_one_from_its_entry(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    gate = asyncio.Event()
    started = asyncio.Event()

    async def waits(event: Event) -> Any:
        started.set()
        await gate.wait()
        return {"done": True}

    name = task_name("waits")
    registered(name, waits)
    engine = Engine(store=MemoryStore())
    wf = await engine.run_once(template([("w", name)], {}), {"x": 1})
    assert wf is not None
    await asyncio.wait_for(started.wait(), 5)
    journal = wf.recorder
    assert isinstance(journal, Journal)
    task = wf.tasks_by_id["w"]
    task.outputs = {"early": 1}  # set while it runs: kept in a running record, as in its entry
    entry = wf.task_entry("w")
    assert entry is not None
    assert entry["state"] == "pending"
    fast = journal._task_record(wf, "w", task, running=True)[0]
    assert fast == journal._task(wf, "w", entry)[0]
    assert (fast.state, fast.end, fast.error) == ("pending", None, None)
    assert '"outputs":{"early":1}' in str(fast.data)
    gate.set()
    await asyncio.wait_for(asyncio.wait([wf]), 5)
    await engine.stop()


async def test_a_retried_task_takes_its_entry_from_the_workflow(
    names: dict[str, str], registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    calls = []

    async def flaky(event: Event) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    flaky_name = task_name("flaky")
    registered(flaky_name, flaky)
    tmpl = template(
        [("a", names["echo"]), ("r", flaky_name, {"retry": {"max_attempts": 2, "delay": 0}})],
        {"a": ["r"]},
    )
    engine = Engine(store=MemoryStore())
    wf = await engine.run_once(tmpl, {"x": 1})
    assert wf is not None
    assert wf.entry_is_the_tasks("a")  # nothing retried yet when it ends
    await asyncio.wait_for(asyncio.wait([wf]), 5)
    await engine.stop()
    assert len(calls) == 2
    assert not wf.entry_is_the_tasks("r")  # its entry has its attempts
    entry = wf.task_entry("r")
    assert entry is not None
    assert len(entry["attempts"]) == 1
