"""The parts of flow control on their own: fair queue, sliding window, keys, virtual clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import pytest
from support import until

from tukio import Event, Workflow, WorkflowTemplate
from tukio.errors import DamagedRecordError
from tukio.flow import FlowHost, LocalFlow, Schedule, Scheduler, SystemClock, VirtualClock, key_exec_id
from tukio.flow.queue import FairQueue
from tukio.flow.rate import SlidingWindow
from tukio.store.memory import MemoryStore


@dataclass(eq=False)
class Item:
    name: str
    seq: int
    partition: Hashable = None
    priority: int = 0
    live: bool = True


def drain(queue: FairQueue[Item]) -> list[str]:
    out = []
    while (item := queue.pop()) is not None:
        out.append(item.name)
    return out


def test_fifo_within_a_priority_and_higher_priority_first() -> None:
    queue: FairQueue[Item] = FairQueue(None)
    for i, priority in enumerate([0, 0, 5, 0, 5, -1]):
        queue.push(Item(f"{i}p{priority}", i, priority=priority))
    assert drain(queue) == ["2p5", "4p5", "0p0", "1p0", "3p0", "5p-1"]


def test_the_limit_holds_per_partition_and_release_frees_a_slot() -> None:
    queue: FairQueue[Item] = FairQueue(1)
    assert queue.start_now("a")
    assert not queue.start_now("a")  # the slot is taken
    assert queue.start_now("b")
    queue.push(Item("a1", 1, "a"))
    queue.push(Item("a2", 2, "a"))
    assert not queue.can_pop()
    assert not queue.start_now("a")  # someone waits there: no jumping the line
    queue.release("a")
    assert queue.running("a") == 0
    assert queue.pop() is not None
    assert queue.running("a") == 1
    assert queue.pop() is None
    queue.release("a")
    assert [i.name for i in queue.waiting()] == ["a2"]
    assert drain(queue) == ["a2"]
    queue.release("a")
    queue.release("b")
    queue.release("unknown")  # nothing happens
    assert queue.running("a") == queue.running("b") == 0


def test_keys_take_turns_at_equal_priority() -> None:
    queue: FairQueue[Item] = FairQueue(None)
    for i in range(100):
        queue.push(Item(f"flood{i}", i, "flood"))
    queue.push(Item("quiet0", 100, "quiet"))
    queue.push(Item("other0", 101, "other"))
    first = drain(queue)[:4]
    # The quiet keys do not wait behind the flood's backlog.
    assert set(first[:3]) == {"flood0", "quiet0", "other0"}
    assert first[3] == "flood1"


def test_dead_items_are_skipped() -> None:
    queue: FairQueue[Item] = FairQueue(None)
    items = [Item(str(i), i) for i in range(3)]
    for item in items:
        queue.push(item)
    items[0].live = False
    queue.refresh(None)
    assert [i.name for i in queue.waiting()] == ["1", "2"]
    items[1].live = False
    assert drain(queue) == ["2"]
    queue.refresh("nobody")


def test_sliding_window() -> None:
    window = SlidingWindow(2, 10)
    assert window.wait(0) == 0.0
    window.take(0)
    window.take(4)
    assert window.wait(5) == 5.0  # the start at 0 leaves the window at 10
    assert window.wait(10) == 0.0
    window.take(10)
    assert window.wait(11) == 3.0  # now the start at 4 is the oldest
    with pytest.raises(ValueError, match="positive limit and period"):
        SlidingWindow(0, 1)
    with pytest.raises(ValueError, match="positive limit and period"):
        SlidingWindow(1, 0)


def test_key_exec_ids_are_stable_and_scoped_by_template() -> None:
    assert key_exec_id("t", "k") == key_exec_id("t", "k")
    assert key_exec_id("t", "k") != key_exec_id("u", "k")
    assert key_exec_id("t", "k") != key_exec_id("t", "k2")


def test_virtual_clock_calls_timers_at_their_time_in_order() -> None:
    clock = VirtualClock(start=100.0)
    seen: list[tuple[str, float]] = []
    clock.call_at(105, lambda: seen.append(("b", clock.time())))
    clock.call_at(101, lambda: seen.append(("a", clock.time())))
    cancelled = clock.call_at(102, lambda: seen.append(("never", clock.time())))
    cancelled.cancel()
    assert clock.next_timer == 101
    assert clock.advance(3) == 1
    assert clock.time() == 103
    assert clock.set(110) == 1
    assert seen == [("a", 101), ("b", 105)]
    assert clock.next_timer is None
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.set(0)


async def test_system_clock_timers_fire_and_cancel() -> None:
    clock = SystemClock()
    assert abs(clock.time() - time.time()) < 1
    fired = asyncio.Event()
    clock.call_at(clock.time() - 1, fired.set)  # already due: at once
    never = clock.call_at(clock.time() + 3600, fired.clear)
    never.cancel()
    never.cancel()
    await asyncio.wait_for(fired.wait(), 5)


def test_local_flow_arguments_and_attachment() -> None:
    with pytest.raises(ValueError, match="max_running must be a positive integer, got True"):
        LocalFlow(max_running=True)
    with pytest.raises(ValueError, match="retention must be >= 0 seconds"):
        LocalFlow(key_retention=-1)
    flow = LocalFlow()
    first = FlowHost(launch=lambda *_: None, find=lambda _: None)
    flow.attach(first)
    flow.attach(first)  # the same engine again: fine
    with pytest.raises(RuntimeError, match="already serves another engine"):
        flow.attach(FlowHost(launch=lambda *_: None, find=lambda _: None))
    assert flow.queued("unknown") == []


async def test_a_closed_flow_cancels_what_it_is_given(noop: str) -> None:
    flow = LocalFlow()
    launched: list[Workflow] = []
    flow.attach(FlowHost(launch=lambda wf, *_: launched.append(wf), find=lambda _: None))
    template = WorkflowTemplate.from_dict({"id": "closed", "tasks": [{"id": "a", "name": noop}]})
    request = flow.request(template, {})
    flow.close()
    workflow = await flow.submit(Workflow(template), Event({}), None, request)
    assert workflow.cancelled()
    assert launched == []


async def test_a_key_in_a_damaged_store_record_still_counts(noop: str, caplog: pytest.LogCaptureFixture) -> None:
    class Damaged(MemoryStore):
        def load(self, exec_id: str) -> dict[str, Any]:
            raise DamagedRecordError(exec_id, "unreadable")

    flow = LocalFlow()
    flow.attach(FlowHost(launch=lambda *_: None, find=lambda _: None, store=Damaged()))
    template = WorkflowTemplate.from_dict({"id": "damaged", "tasks": [{"id": "a", "name": noop}]})
    request = flow.request(template, {}, key="k")
    assert await flow.known(request) == key_exec_id("damaged", "k")
    assert "cannot load it" in caplog.text
    assert await flow.known(flow.request(template, {})) is None


def test_a_schedule_refuses_a_bad_catch_up_rule() -> None:
    with pytest.raises(ValueError, match="catch_up must be one of none, last, all, got 'sometimes'"):
        Schedule.from_spec("t", {"cron": "@daily", "catch_up": "sometimes"})


async def test_a_failed_firing_or_store_read_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = VirtualClock(start=1_800_000_000.0)

    async def fire(template_id: str, data: dict[str, Any], key: str) -> None:
        raise RuntimeError("boom")

    async def fired(template_id: str) -> set[str]:
        raise OSError("store down")

    scheduler = Scheduler(clock, fire, fired)
    schedule = scheduler.assign("t", {"cron": "* * * * *", "catch_up": "all"})
    assert schedule is not None
    await until(lambda: schedule.next_tick is not None)
    assert "cannot read the store, no catch-up" in caplog.text
    clock.advance(60)
    await until(lambda: "did not fire" in caplog.text)
    assert scheduler.assign("t", {"cron": "* * * * *", "catch_up": "all"}) is schedule  # unchanged: kept
    scheduler.close()
    assert scheduler.assign("u", {"cron": "@daily"}) is None
    scheduler.resume("t")
    assert schedule.next_tick is None
