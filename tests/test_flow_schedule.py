"""Schedules on a virtual clock: ticks, pause and resume, catch-up, time zones, bad input, stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from support import until

from tukio import Engine, WorkflowTemplate
from tukio.errors import TemplateError
from tukio.flow import LocalFlow, VirtualClock, key_exec_id
from tukio.flow.schedule import tick_key
from tukio.store.memory import MemoryStore

UTC = timezone.utc
# 2026-03-01 00:00 UTC, a Sunday.
START = datetime(2026, 3, 1, tzinfo=UTC).timestamp()


class Ticks:
    """A registered task that records the tick of each firing."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def task(self, event: Any) -> None:
        self.seen.append(event.data["tick"][11:16])


@pytest.fixture
def ticks(registered: Callable[..., Any], task_name: Callable[[str], str]) -> tuple[Ticks, str]:
    t = Ticks()
    name = task_name("tick")
    registered(name, t.task)
    return t, name


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=START)


@pytest.fixture
async def engine(clock: VirtualClock) -> AsyncIterator[Engine]:
    eng = Engine(flow=LocalFlow(clock=clock))
    yield eng
    await asyncio.wait_for(eng.stop(force=True), 5)


def scheduled(uid: str, task: str, **schedule: Any) -> WorkflowTemplate:
    return WorkflowTemplate.from_dict(
        {"id": uid, "policy": "start-new", "schedule": schedule, "tasks": [{"id": "a", "name": task}]}
    )


async def within(predicate: Callable[[], object], seconds: float = 10.0) -> None:
    """Poll until `predicate()` holds (the catch-up reads the store from a thread); fail after `seconds`."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition never became true: {predicate}")
        await asyncio.sleep(0.001)


async def armed(engine: Engine, template_id: str) -> None:
    await within(lambda: any(s.template_id == template_id and s.next_tick is not None for s in engine.schedules))


async def test_fires_once_per_tick(engine: Engine, clock: VirtualClock, ticks: tuple[Ticks, str]) -> None:
    seen, task = ticks
    await engine.load(scheduled("every5", task, cron="*/5 * * * *", data={"x": 1}))
    await armed(engine, "every5")
    (schedule,) = engine.schedules
    assert schedule.next_tick == datetime(2026, 3, 1, 0, 5, tzinfo=UTC)
    clock.advance(15 * 60)
    await until(lambda: len(seen.seen) == 3)
    assert seen.seen == ["00:05", "00:10", "00:15"]
    assert schedule.last_tick == datetime(2026, 3, 1, 0, 15, tzinfo=UTC)
    assert schedule.next_tick == datetime(2026, 3, 1, 0, 20, tzinfo=UTC)
    # Each tick is one execution, under the id its tick gives.
    assert engine.flow.queued() == []
    exec_id = key_exec_id("every5", tick_key(datetime(2026, 3, 1, 0, 10, tzinfo=UTC)))
    assert await engine.trigger("every5", {"tick": "again"}, key=tick_key(datetime(2026, 3, 1, 0, 10, tzinfo=UTC)))
    assert (await engine.trigger("every5", {}, key=tick_key(datetime(2026, 3, 1, 0, 10, tzinfo=UTC)))).uid == exec_id  # type: ignore[union-attr]
    assert len(seen.seen) == 3


async def test_pause_skips_ticks_and_resume_goes_on(
    engine: Engine, clock: VirtualClock, ticks: tuple[Ticks, str]
) -> None:
    seen, task = ticks
    await engine.load(scheduled("paused", task, cron="@hourly"))
    await armed(engine, "paused")
    engine.pause_schedule("paused")
    assert engine.schedules[0].paused
    assert engine.schedules[0].next_tick is None
    clock.advance(3 * 3600)
    engine.resume_schedule("paused")
    engine.resume_schedule("paused")  # already running: nothing changes
    clock.advance(3600)
    await until(lambda: len(seen.seen) == 1)
    assert seen.seen == ["04:00"]
    with pytest.raises(KeyError):
        engine.pause_schedule("nothing")


async def test_schedule_from_python_replaces_and_checks(
    engine: Engine, clock: VirtualClock, ticks: tuple[Ticks, str]
) -> None:
    seen, task = ticks
    await engine.load(scheduled("py", task, cron="@daily"))
    schedule = await engine.schedule("py", "30 1 * * *", timezone="Europe/Paris", data={"from": "python"})
    assert engine.schedules == [schedule]
    assert schedule.next_tick == datetime(2026, 3, 1, 0, 30, tzinfo=UTC)  # 01:30 in Paris (UTC+1)
    clock.advance(3600)
    await until(lambda: len(seen.seen) == 1)
    with pytest.raises(TemplateError) as info:
        await engine.schedule("py", "61 * * * *", timezone="Nowhere/Land", catch_up="maybe")
    assert info.value.problems == [
        "schedule.cron: cannot parse '61 * * * *': minute 61 out of range 0-59",
        "schedule.timezone: unknown time zone 'Nowhere/Land'",
        "schedule.catch_up: must be one of none, last, all, got 'maybe'",
    ]
    with pytest.raises(KeyError):
        await engine.schedule("not-loaded", "@daily")


async def test_a_tick_in_the_skipped_hour_fires_at_its_end(engine: Engine, clock: VirtualClock, noop: str) -> None:
    clock.set(datetime(2026, 3, 28, 12, tzinfo=UTC).timestamp())
    await engine.load(scheduled("dst", noop, cron="30 2 * * *", timezone="Europe/Paris"))
    await armed(engine, "dst")
    # 2026-03-29: Paris skips 02:00-03:00; the 02:30 tick fires at 03:00 CEST (01:00 UTC).
    assert engine.schedules[0].next_tick == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


async def test_unload_reload_and_stop_end_schedules(
    engine: Engine, clock: VirtualClock, ticks: tuple[Ticks, str]
) -> None:
    seen, task = ticks
    template = scheduled("gone", task, cron="* * * * *")
    await engine.load(template)
    await armed(engine, "gone")
    same = scheduled("gone", task, cron="* * * * *")
    await engine.reload([same])
    assert len(engine.schedules) == 1
    await engine.unload("gone")
    assert engine.schedules == []
    await engine.load(template)
    await armed(engine, "gone")
    engine.stop()
    clock.advance(600)
    await asyncio.sleep(0)
    assert seen.seen == []
    assert engine.schedules[0].next_tick is None


async def test_catch_up_from_the_store(clock: VirtualClock, ticks: tuple[Ticks, str]) -> None:
    seen, task = ticks
    store = MemoryStore()
    for rule, expected in (("all", ["00:15", "00:20", "00:25", "00:30"]), ("last", ["00:30"]), ("none", [])):
        clock.set(max(clock.time(), START))
        uid = f"catch-{rule}"
        first = Engine(store=store, flow=LocalFlow(clock=clock))
        await first.load(scheduled(uid, task, cron="*/5 * * * *", catch_up=rule))
        await armed(first, uid)
        clock.set(START + 10 * 60)
        await until(lambda: len(seen.seen) == 2)
        await asyncio.wait_for(first.stop(), 5)
        seen.seen.clear()
        clock.set(START + 32 * 60)  # no engine from 00:10 to 00:32
        second = Engine(store=store, flow=LocalFlow(clock=clock))
        await second.load(scheduled(uid, task, cron="*/5 * * * *", catch_up=rule))
        await armed(second, uid)
        count = len(expected)
        await within(lambda: len(seen.seen) == count)  # noqa: B023 - awaited within the iteration
        await asyncio.sleep(0)
        assert seen.seen == expected, rule
        await asyncio.wait_for(second.stop(), 5)
        seen.seen.clear()
        clock = VirtualClock(start=START)


async def test_without_a_store_nothing_is_caught_up(clock: VirtualClock, ticks: tuple[Ticks, str]) -> None:
    seen, task = ticks
    clock.set(START + 3600)
    engine = Engine(flow=LocalFlow(clock=clock))
    await engine.load(scheduled("amnesic", task, cron="*/5 * * * *", catch_up="all"))
    await armed(engine, "amnesic")
    await asyncio.sleep(0)
    assert seen.seen == []
    await asyncio.wait_for(engine.stop(), 5)


class StallingClock(VirtualClock):
    """A clock whose timers the test calls itself, as late as it likes (a stalled process)."""

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.due: list[Callable[[], object]] = []

    def call_at(self, when: float, callback: Callable[[], object]) -> Any:
        self.due.append(callback)
        return super().call_at(when, lambda: None)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("none", ["00:05"]), ("last", ["00:05", "00:20"]), ("all", ["00:05", "00:10", "00:15", "00:20"])],
)
async def test_ticks_missed_by_a_stalled_process_follow_the_catch_up_rule(
    ticks: tuple[Ticks, str], rule: str, expected: list[str]
) -> None:
    seen, task = ticks
    clock = StallingClock(START)
    engine = Engine(flow=LocalFlow(clock=clock))
    await engine.load(scheduled("stalled", task, cron="*/5 * * * *", catch_up=rule))
    await armed(engine, "stalled")
    clock.set(START + 22 * 60)  # the 00:05 timer runs at 00:22
    clock.due.pop()()
    await until(lambda: len(seen.seen) == len(expected))
    assert sorted(seen.seen) == expected
    assert engine.schedules[0].next_tick == datetime(2026, 3, 1, 0, 25, tzinfo=UTC)
    await asyncio.wait_for(engine.stop(), 5)


async def test_catch_up_looks_back_further_than_an_hour(clock: VirtualClock, ticks: tuple[Ticks, str]) -> None:
    seen, task = ticks
    store = MemoryStore()
    first = Engine(store=store, flow=LocalFlow(clock=clock))
    await first.load(scheduled("hourly", task, cron="0 * * * *", catch_up="all"))
    await armed(first, "hourly")
    clock.set(START + 3600)
    await until(lambda: seen.seen == ["01:00"])
    await asyncio.wait_for(first.stop(), 5)
    clock.set(START + 5.5 * 3600)  # down from 01:00 to 05:30
    second = Engine(store=store, flow=LocalFlow(clock=clock))
    await second.load(scheduled("hourly", task, cron="0 * * * *", catch_up="all"))
    await within(lambda: len(seen.seen) == 5)
    assert seen.seen == ["01:00", "02:00", "03:00", "04:00", "05:00"]
    await asyncio.wait_for(second.stop(), 5)
