"""Overrun policies: the decision table, `new_workflow`, the workflow lock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from support import template

from tukio import Event, OverrunPolicy, Workflow
from tukio.policy import Decision, decide
from tukio.workflow import OverrunPolicyHandler, new_workflow
from tukio.workflow.lock import WorkflowLock


@pytest.mark.parametrize(
    ("policy", "running", "locked", "expected"),
    [
        (OverrunPolicy.start_new, 5, 5, Decision.start),
        (OverrunPolicy.skip, 0, 0, Decision.start),
        (OverrunPolicy.skip, 1, 0, Decision.skip),
        (OverrunPolicy.skip_until_unlock, 3, 0, Decision.start),
        (OverrunPolicy.skip_until_unlock, 3, 1, Decision.skip),
        (OverrunPolicy.abort_running, 0, 0, Decision.start),
        (OverrunPolicy.abort_running, 2, 2, Decision.abort_then_start),
    ],
)
def test_decide(policy: OverrunPolicy, running: int, locked: int, expected: Decision) -> None:
    assert decide(policy, running, locked) is expected


def test_policy_names() -> None:
    assert OverrunPolicy.get(None) is OverrunPolicy.skip_until_unlock
    assert OverrunPolicy.get_default_policy() is OverrunPolicy.skip_until_unlock
    assert OverrunPolicy.get("abort-running") is OverrunPolicy.abort_running
    assert OverrunPolicy.get(OverrunPolicy.skip) is OverrunPolicy.skip
    assert [p.value for p in OverrunPolicy] == ["skip", "start-new", "skip-until-unlock", "abort-running"]
    with pytest.raises(ValueError, match="unknown overrun policy 'sometimes'"):
        OverrunPolicy.get("sometimes")


def test_lock_callbacks_run_once() -> None:
    lock = WorkflowLock()
    calls: list[str] = []
    lock.add_release_callback(lambda: calls.append("a"))
    lock.add_release_callback(lambda: calls.append("b"))
    assert lock.locked()
    lock.release()
    lock.release()
    assert not lock.locked()
    assert calls == ["a", "b"]
    lock.add_release_callback(lambda: calls.append("late"))
    assert calls == ["a", "b", "late"]


async def test_new_workflow_applies_the_policy(registered: Callable[..., Any]) -> None:
    release = asyncio.Event()

    async def park(event: Event) -> None:
        await release.wait()

    registered("nw-park", park)

    def tmpl(policy: str) -> Any:
        return template([("a", "nw-park")], {}, policy=policy, id="nw")

    running = Workflow(tmpl("skip"))
    running.run({})
    assert new_workflow(tmpl("skip"), [running]) is None
    assert new_workflow(tmpl("skip-until-unlock"), [running]) is None
    fresh = new_workflow(tmpl("start-new"), [running])
    assert isinstance(fresh, Workflow)
    assert not fresh.done()
    assert new_workflow(tmpl("skip"), []) is not None
    replacement = new_workflow(tmpl("abort-running"), [running])
    assert replacement is not None
    with pytest.raises(asyncio.CancelledError):
        await running
    release.set()


async def test_new_workflow_counts_only_instances_of_the_same_template(registered: Callable[..., Any]) -> None:
    # The original's Engine passed every running workflow; only those of the
    # template's id count.
    release = asyncio.Event()

    async def park(event: Event) -> None:
        await release.wait()

    registered("nw-other", park)
    other = Workflow(template([("a", "nw-other")], {}, id="other", policy="skip"))
    other.run({})
    mine = template([("a", "nw-other")], {}, id="mine", policy="skip")
    assert new_workflow(mine, [other]) is not None
    handler = OverrunPolicyHandler(template([("a", "nw-other")], {}, id="other", policy="skip"))
    assert handler.policy is OverrunPolicy.SKIP
    assert handler.new_workflow([other]) is None
    assert handler.new_workflow() is not None
    aborter = OverrunPolicyHandler(template([("a", "nw-other")], {}, id="other", policy="abort-running"))
    assert aborter.new_workflow([other]) is not None
    with pytest.raises(asyncio.CancelledError):
        await other
    release.set()


async def test_abort_running_through_new_workflow_starts_once_the_aborted_ended(
    registered: Callable[..., Any],
) -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def stubborn(event: Event) -> None:
        started.append(event.data["who"])
        try:
            await release.wait()
        except asyncio.CancelledError:
            await release.wait()  # ends only once released, cancelled or not
            raise

    registered("nw-stubborn", stubborn)
    tmpl = template([("a", "nw-stubborn")], {}, policy="abort-running", id="abort")
    old = Workflow(tmpl)
    old.run({"who": "old"})
    await asyncio.sleep(0)
    new = new_workflow(tmpl, [old])
    assert new is not None
    begun = new.run({"who": "new"})
    with pytest.raises(RuntimeError, match="already started"):
        new.run({"who": "again"})
    await asyncio.sleep(0)
    assert started == ["old"]  # the new one waits for the aborted one to end
    assert not begun.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await old
    await asyncio.wait_for(begun, 5)
    await asyncio.wait_for(new, 5)
    assert started == ["old", "new"]


async def test_a_workflow_cancelled_while_waiting_for_aborted_ones_never_runs(registered: Callable[..., Any]) -> None:
    gate = asyncio.Event()

    async def park(event: Event) -> None:
        await gate.wait()

    registered("nw-park2", park)
    tmpl = template([("a", "nw-park2")], {}, policy="abort-running", id="abort2")
    old = Workflow(tmpl)
    old.run({})
    new = new_workflow(tmpl, [old])
    assert new is not None
    begun = new.run({})
    new.cancel()
    with pytest.raises(asyncio.CancelledError):
        await old
    await asyncio.wait_for(begun, 5)
    assert new.cancelled()
    assert new.tasks == set()
