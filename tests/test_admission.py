"""The node's side of the admissions across nodes: what it counts as running here (`tukio._admission`)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from support import template

from tukio import Workflow
from tukio._admission import Admissions
from tukio.policy import Decision, OverrunPolicy
from tukio.store.base import ExecutionRecord, JSONSerializer


class RecordingStore:
    """The part of a shared store an admission uses: it skips when anything runs, and keeps what it was told."""

    serializer = JSONSerializer()

    def __init__(self) -> None:
        self.told: list[list[str]] = []

    def admit_soon(self, policy: OverrunPolicy, begin: ExecutionRecord, here: Collection[str]) -> None:
        return None  # no loop of its own: the admission calls `admit` in a thread

    def admit(self, policy: OverrunPolicy, begin: ExecutionRecord, here: Collection[str]) -> tuple[Decision, list[str]]:
        others = [uid for uid in here if uid != begin.exec_id]
        self.told.append(others)
        return (Decision.skip if others else Decision.start), []


async def test_an_instance_that_began_while_an_admission_waited_for_a_claim_counts(noop: str) -> None:
    # Found by the fault suite (PostgreSQL, a slow proxy): a trigger waiting for a claim to end was
    # told what ran here before it waited, so an instance admitted meanwhile was not counted and
    # 'skip' started a second one.
    store = RecordingStore()
    instances: dict[str, Workflow] = {}
    admissions = Admissions(store, "n", asyncio.get_running_loop(), instances)  # type: ignore[arg-type]
    skip = template([("a", noop)], {}, id="adm-skip", policy="skip")
    first, second = Workflow(skip), Workflow(skip)
    asked_after_the_claim: list[bool] = []
    claim_over = False

    def running() -> list[str]:
        asked_after_the_claim.append(claim_over)
        return list(instances)

    async with admissions.claiming():
        admitting = asyncio.ensure_future(admissions.admit(second, {}, running))
        # One turn runs the admission's first step (scheduled before this one resumes): it now
        # waits at the gate, the claim holding it.
        await asyncio.sleep(0)
        assert not admitting.done()
        instances[first.uid] = first  # admitted and started while the claim held the gate
    claim_over = True
    assert await asyncio.wait_for(admitting, 10) is None  # skipped: `first` runs here
    assert asked_after_the_claim == [True]
    assert store.told == [[first.uid]]
    first.cancel()
    second.cancel()


async def test_an_admission_with_nothing_running_here_starts(noop: str) -> None:
    store = RecordingStore()
    admissions = Admissions(store, "n", asyncio.get_running_loop(), {})  # type: ignore[arg-type]
    wf = Workflow(template([("a", noop)], {}, id="adm-start", policy="skip"))
    assert await asyncio.wait_for(admissions.admit(wf, {}, list), 10) == []
    assert store.told == [[]]
    wf.cancel()
