"""One node's side of the overrun policies across the nodes sharing a journal (see `tukio.cluster`).

The store rules on each trigger (`LeasedStore.admit`, the one rule of
`tukio.store._gate`); this module gives it what runs here: the node's
instances of the template, what it is admitting, and what it owns without
running it yet (executions it claimed, being resumed). Claims and
admissions never overlap (`_ClaimGate`), so an admission counts what a
claim took, or runs before it. It also records the unlocks of
'skip-until-unlock', and stands in for the executions of other nodes that
an 'abort-running' trigger waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tukio._report import iso_now, storable
from tukio.policy import Decision
from tukio.store.base import UNFINISHED, ExecutionRecord

if TYPE_CHECKING:
    from tukio.store._shared import LeasedStore
    from tukio.store.base import Serializer
    from tukio.workflow.workflow import Workflow

__all__ = ["Admissions", "begin_record"]

log = logging.getLogger(__name__)

#: Seconds between two looks at whether executions aborted on other nodes have ended.
WATCH_PERIOD = 0.05


class Admissions:
    """The overrun policies of one node, across the nodes.

    Args:
        store: the shared store.
        node: the node's name.
        loop: the engine's loop.
        instances: the engine's running workflows by execution id.
    """

    def __init__(
        self, store: LeasedStore, node: str, loop: asyncio.AbstractEventLoop, instances: Mapping[str, Workflow]
    ) -> None:
        self._store = store
        self._node = node
        self._loop = loop
        self._instances = instances
        self._admitting: set[str] = set()  # executions admitted by the store, not yet running here
        #: Executions this node owns that do not run here yet (claimed or taken back, being resumed):
        #: they count as running for the policies from the moment they are owned.
        self.claimed: set[str] = set()
        self._gate = _ClaimGate()
        self._aborted: set[str] = set()  # claimed executions aborted (abort-running) before they resumed
        self._unlocked: list[str] = []  # executions that unlocked, to record
        self._unlocking: asyncio.Task[None] | None = None
        self._watched: dict[str, asyncio.Future[None]] = {}  # executions aborted on other nodes
        self._watching: asyncio.Task[None] | None = None
        self._closed = False

    def claiming(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the gate for one claim: no admission runs meanwhile."""
        return self._gate.claim()

    def take_aborted(self, exec_ids: Iterable[str]) -> list[str]:
        """Those of `exec_ids` (claimed, not resumed) an admission aborted: forgotten here, to be cancelled."""
        aborted = [i for i in exec_ids if i in self._aborted]
        self._aborted.difference_update(aborted)
        return aborted

    async def admit(
        self, workflow: Workflow, data: Any, running: Callable[[], Iterable[str]] = tuple
    ) -> list[Any] | None:
        """Ask the store to admit `workflow` (not started yet) under its template's policy.

        Unless the policy says skip, the store has recorded the workflow's
        begin (owned by this node) when this returns. What this node claimed
        from dead nodes and has not resumed yet counts as running here.

        Args:
            workflow: the new workflow.
            data: its triggering data.
            running: returns the ids of the instances of its template running
                on this node; asked once the admission holds the gate (an
                instance that began while it waited for a claim counts).

        Returns:
            None when the policy says skip; else what the workflow waits
            for before it starts (abort-running): this node's instances, and
            stand-ins that end when the instances of other nodes have ended.
        """
        policy = workflow.template.policy
        begin = begin_record(self._store.serializer, workflow, data)
        uid = workflow.uid
        self._admitting.add(uid)
        try:
            async with self._gate.admission():
                here = [*running(), *self._admitting, *self.claimed]
                future = self._store.admit_soon(policy, begin, here)  # no thread when the store needs none
                if future is not None:
                    decision, waits = await asyncio.wrap_future(future)
                else:
                    decision, waits = await asyncio.to_thread(self._store.admit, policy, begin, here)
        finally:
            self._admitting.discard(uid)
        if decision is Decision.skip:
            return None
        previous: list[Any] = []
        for exec_id in waits:
            local = self._instances.get(exec_id)
            if local is None and exec_id in self.claimed:
                self._aborted.add(exec_id)  # claimed, not resumed yet: it will not be (see `confirm`)
            previous.append(local if local is not None else self.watch(exec_id))
        if previous:
            log.info("[%s] waits for %d aborted execution(s) to end (abort-running)", uid, len(previous))
        return previous

    def unlocked(self, workflow: Workflow) -> None:
        """`workflow` unlocked while it runs: record it, so other nodes no longer skip for it."""
        if workflow.done() or self._closed:
            return  # an ended execution does not count
        self._unlocked.append(workflow.uid)
        if self._unlocking is None:
            self._unlocking = self._loop.create_task(self._record_unlocks(), name=f"tukio-unlock-{self._node}")

    async def _record_unlocks(self) -> None:
        try:
            while self._unlocked:
                ids, self._unlocked = self._unlocked, []
                try:
                    await asyncio.to_thread(self._store.unlock, ids)
                except Exception:
                    log.exception("node %s: could not record that %d execution(s) unlocked", self._node, len(ids))
        finally:
            self._unlocking = None

    def watch(self, exec_id: str) -> asyncio.Future[None]:
        """A stand-in for an execution of another node: it ends once the store has the execution ended.

        Cancelling it does nothing (the execution's cancel request is in the store already).
        """
        ended = self._watched.get(exec_id)
        if ended is None:
            ended = self._watched[exec_id] = _Elsewhere(loop=self._loop)
        if self._watching is None:
            self._watching = self._loop.create_task(self._watch_forever(), name=f"tukio-watch-{self._node}")
        return ended

    async def _watch_forever(self) -> None:
        try:
            while self._watched:
                await asyncio.sleep(WATCH_PERIOD)
                try:
                    left = set(await asyncio.to_thread(self._store.unfinished_among, list(self._watched)))
                except Exception:
                    log.exception("node %s: could not check aborted executions of other nodes", self._node)
                    continue
                for exec_id in [i for i in self._watched if i not in left]:
                    ended = self._watched.pop(exec_id)
                    if not ended.done():
                        ended.set_result(None)
        finally:
            self._watching = None

    def close(self) -> None:
        """Stop recording unlocks and watching other nodes' executions."""
        self._closed = True
        for task in (self._watching, self._unlocking):
            if task is not None and task is not asyncio.current_task():
                task.cancel()


class _ClaimGate:
    """Claims and admissions, never at once: an admission counts what a claim took, or runs before it.

    Admissions run side by side; a claim waits for those in flight, and new
    ones wait for the claim (so that claims are never starved).
    """

    def __init__(self) -> None:
        self._admissions = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._claim: asyncio.Future[None] | None = None

    @contextlib.asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """Hold the gate for one admission."""
        while self._claim is not None:
            await asyncio.shield(self._claim)
        self._admissions += 1
        self._drained.clear()
        try:
            yield
        finally:
            self._admissions -= 1
            if not self._admissions:
                self._drained.set()

    @contextlib.asynccontextmanager
    async def claim(self) -> AsyncIterator[None]:
        """Hold the gate for one claim (alone)."""
        while self._claim is not None:
            await asyncio.shield(self._claim)
        self._claim = claim = asyncio.get_running_loop().create_future()
        try:
            await self._drained.wait()
            yield
        finally:
            self._claim = None
            claim.set_result(None)


class _Elsewhere(asyncio.Future):  # type: ignore[type-arg]
    """An execution of another node that a new workflow waits for (abort-running).

    Its cancel request is in the store already: `cancel()` does nothing here;
    the stand-in ends when the execution has ended, wherever it ran.
    """

    def cancel(self, msg: Any = None) -> bool:
        return False


def _storable(blob: str | bytes) -> str | bytes:
    return storable(blob) if isinstance(blob, str) else blob


def begin_record(
    serializer: Serializer, workflow: Workflow, data: Any, stored: Collection[str] = ()
) -> ExecutionRecord:
    """The begin record of `workflow` (not started yet) triggered by `data`, owned by nobody yet.

    The template is left out when its version is among those `stored`
    already. What cannot be serialized is left out: the journal then
    records the workflow as failed.
    """
    template: str | bytes | None = None
    event: str | bytes | None = None
    with contextlib.suppress(Exception):
        if workflow.template.version not in stored:
            template = _storable(serializer.dumps(workflow.template.as_dict()))
        event = _storable(serializer.dumps(data))
    return ExecutionRecord(
        storable(workflow.uid),
        storable(str(workflow.template.uid)),
        UNFINISHED,
        iso_now(),
        template=template,
        event=event,
        version=workflow.template.version,
    )
