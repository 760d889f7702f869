"""The workflow's private state machine: allowed moves, and misuse that raises."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from support import template

from tukio import Event, Workflow
from tukio.recorder import WRITTEN, Recorder, Written
from tukio.workflow._lifecycle import ALLOWED, State, check_move


def test_every_final_state_is_reachable_and_final() -> None:
    reached = {new for _, new in ALLOWED}
    assert {s for s in State if s.ended} <= reached
    assert not any(old.ended for old, _ in ALLOWED)


def test_a_move_outside_the_table_names_both_states() -> None:
    with pytest.raises(RuntimeError, match="cannot go from 'finished' to 'running'"):
        check_move("wf-1", State.FINISHED, State.RUNNING)
    assert check_move("wf-1", State.RUNNING, State.SUSPENDED) is State.SUSPENDED


async def test_run_twice_or_after_the_end_raises(noop: str) -> None:
    wf = Workflow(template([("a", noop)], {}))
    assert wf.run({}) is WRITTEN
    with pytest.raises(RuntimeError, match=r"already started.*'running' to 'running'"):
        wf.run({})
    await asyncio.wait_for(wf, 5)
    with pytest.raises(RuntimeError, match="'finished' to 'running'"):
        wf.run({})
    with pytest.raises(RuntimeError, match="already started"):
        wf.fast_forward(wf.report())


async def test_cancel_before_run_ends_cancelled_and_run_then_raises(noop: str) -> None:
    wf = Workflow(template([("a", noop)], {}))
    assert wf.cancel()
    assert wf.cancelled()
    assert not wf.cancel()
    assert not wf.suspend()
    assert not wf.resume()
    with pytest.raises(RuntimeError, match="'cancelled' to 'running'"):
        wf.run({})


async def test_timeout_while_cancelling_ends_timed_out(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    async def stubborn(event: Event) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0)
            raise

    name = task_name("stubborn")
    registered(name, stubborn)
    wf = Workflow(template([("a", name)], {}))
    wf.run({})
    await asyncio.sleep(0)
    assert wf.cancel()
    assert wf.timeout()
    assert wf.timed_out
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(wf, 5)
    assert wf.future_state.value == "timeout"


class SlowRecorder(Recorder):
    """Holds every task end until `release()`; records what it saw."""

    def __init__(self) -> None:
        self.held: list[Written] = []
        self.seen: list[tuple[str, str]] = []

    def task_started(self, workflow: Workflow, task_id: str) -> None:
        self.seen.append(("started", task_id))

    def task_ended(self, workflow: Workflow, task_id: str) -> Written:
        self.seen.append(("ended", task_id))
        written = Written()
        self.held.append(written)
        return written

    def workflow_end(self, workflow: Workflow, state: str, error: str | None) -> None:
        self.seen.append(("end", state))

    def release(self) -> None:
        held, self.held = self.held, []
        for written in held:
            written.resolve()


async def test_successors_wait_for_what_the_recorder_returns(noop: str) -> None:
    recorder = SlowRecorder()
    wf = Workflow(template([("a", noop), ("b", noop)], {"a": ["b"]}), recorder=recorder)
    wf.run({})
    await asyncio.wait_for(asyncio.shield(wf.tasks_by_id["a"]), 5)
    assert "b" not in wf.tasks_by_id
    recorder.release()
    assert "b" in wf.tasks_by_id
    await asyncio.wait_for(asyncio.shield(wf.tasks_by_id["b"]), 5)
    assert not wf.done()
    recorder.release()
    await asyncio.wait_for(wf, 5)
    assert recorder.seen == [("started", "a"), ("ended", "a"), ("started", "b"), ("ended", "b"), ("end", "finished")]


async def test_written_can_be_awaited_and_carries_its_error() -> None:
    written = Written()

    async def wait() -> None:
        await written

    waiter = asyncio.ensure_future(wait())
    await asyncio.sleep(0)
    written.resolve(ValueError("nope"))
    with pytest.raises(ValueError, match="nope"):
        await waiter
    seen: list[Any] = []
    written.then(lambda arg, error: seen.append((arg, error)), "x")
    assert seen[0][0] == "x"
    assert isinstance(seen[0][1], ValueError)
    await WRITTEN


async def test_suspended_with_nothing_left_to_resume_ends_finished(
    registered: Callable[..., Any], task_name: Callable[[str], str]
) -> None:
    # Suspended, its only task fails instead of suspending: nothing to resume, it ends (suspended -> finished).
    started = asyncio.Event()

    async def refuses(event: Event) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ValueError("will not suspend") from None

    name = task_name("refuses")
    registered(name, refuses)
    wf = Workflow(template([("a", name)], {}))
    wf.run({})
    await started.wait()
    assert wf.suspend()
    await asyncio.wait_for(asyncio.shield(wf), 5)
    assert wf.future_state.value == "finished"
    assert wf.result() == {wf.tasks_by_id["a"]}
    assert wf.tasks_by_id["a"].future_state.value == "exception"
