"""Several engines, one journal: nodes, leases, takeovers and fencing.

An engine whose store can share its journal (`PostgresStore`, `SQLiteStore`)
is a *node*: every execution it starts is owned by it, under its current
*epoch*. The node renews a lease in the database every third of it (a
heartbeat, on the server's clock for PostgreSQL, the host's boot-time clock
for SQLite: see `tukio.store._lease`). A node whose lease expired, or whose
crashed process let go of its lock file (SQLite), is dead; a node whose
lease runs is alive, whatever happens to its database connections. Each
live node then takes over a dead node's unfinished executions (an atomic
claim: each is taken by one node only) and resumes them as
`Engine.recover` does; from the claim on, they count as running on it for
the overrun policies (see `tukio._admission`).

The database refuses a write for an execution unless it comes from its
owner under the owner's current epoch (fencing). A node that comes back after
losing ownership (it was paused, or cut off, past its lease) has its copies
of those workflows cancelled when its writes are refused, or as soon as its
next heartbeat finds it was late. A node restarted under the same name takes
its unfinished executions back at once, under a new epoch, which fences any
leftover process of that name. Before it resumes a claimed execution, a
node whose own lease deadline lapsed (paused, say) renews it and asks the
store what it still owns (`Cluster.confirm`).

Overrun policies hold across the nodes: with a shared store, the engine asks
the store to admit each trigger of a template whose policy is not
'start-new' (`admit`, one transaction under a lock of the template, see
`tukio.store._gate`), and 'abort-running' cancels the running instance
wherever it runs (a cancel request its owner acts on at its next heartbeat).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import itertools
import logging
import os
import socket
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tukio._admission import Admissions
from tukio.broker import get_broker
from tukio.store._catchup import ListenMark
from tukio.store._shared import LeasedStore

if TYPE_CHECKING:
    from tukio.store.base import ExecutionInfo
    from tukio.workflow.workflow import Workflow

__all__ = ["DEFAULT_LEASE", "Cluster", "LeasedStore", "ListenMark", "default_node_name", "listen_mark"]

log = logging.getLogger(__name__)

#: Seconds a node stays alive without renewing its lease.
DEFAULT_LEASE = 5.0
#: Seconds an event published for the other nodes is kept (a node cut off longer misses it).
EVENTS_KEPT = 3600.0
#: Shortest time between two heartbeats (however short the lease).
MIN_PERIOD = 0.05
#: Longest time between two looks for dead nodes' work (a dead node's work is taken over within
#: this of its lease's end).
CLAIM_PERIOD = 0.25
#: How many executions one claim takes at most (claims repeat until none is left).
CLAIM_BATCH = 100
#: Seconds a dead node with a default name stays listed after its lease expired (then it is pruned).
PRUNE_GRACE = 60.0
#: Heartbeats between two prunings of dead nodes.
PRUNE_EVERY = 30
#: Longest pause between two reads of a polled store's events while no task listens (see `SQLiteStore.event_poll`).
IDLE_POLL = 0.5

_engines = itertools.count(1)
#: The nodes of the engines of each loop (they share the loop's broker).
_local_nodes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[str]] = weakref.WeakKeyDictionary()
#: The one cluster of each loop that dispatches the other nodes' events there.
_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Cluster] = weakref.WeakKeyDictionary()
#: The id of the last event the engines of each loop published (and dispatched there).
_published: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()


def listen_mark(loop: asyncio.AbstractEventLoop, then: Callable[[ListenMark], object]) -> None:
    """Call `then` with where the shared events stand on `loop`: now, or once the loop's reader knows.

    Nothing is called when no engine of the loop reads the shared events.
    """
    reader = _listeners.get(loop)
    if reader is None:
        return
    if reader.read is None:  # its first read of the store's cursor is on its way
        reader._on_read.append(lambda: listen_mark(loop, then))
        return
    then(ListenMark(reader.read, _published.get(loop, 0), tuple(sorted(_local_nodes.get(loop, ())))))


def default_node_name() -> str:
    """A node name unique to this engine: host, process id and a counter."""
    return f"{socket.gethostname()}-{os.getpid()}-{next(_engines)}"


class Cluster:
    """One engine's membership of a cluster: heartbeats, takeovers and fencing.

    The engine makes one when its store is a `LeasedStore`. Three tasks run
    on the engine's loop, each on its own schedule: the heartbeat (every
    third of the lease, on a thread of its own: nothing else the node does
    can delay it), the look for dead nodes' work (claims, then resumes in
    tasks of their own), and the reading of the other nodes' events.

    Args:
        store: the shared store.
        node: the node's name (`default_node_name()` when None).
        lease: seconds the node stays alive without a heartbeat.
        loop: the engine's loop.
        instances: the engine's running workflows by execution id.
        templates: the ids of the templates the engine can run.
        resume: resumes claimed executions in the engine.
        dispatch: delivers ``(data, topic, event id)`` published by another
            node to this engine's listening tasks.
        versions: returns the template versions the engine can run (None:
            any); a claim leaves the executions of the other versions alone.

    Raises:
        ValueError: `lease` is not positive or `node` is empty.
        RuntimeError: the store already writes for another node.
    """

    def __init__(
        self,
        store: LeasedStore,
        node: str | None,
        lease: float,
        loop: asyncio.AbstractEventLoop,
        instances: Mapping[str, Workflow],
        templates: Callable[[], list[str]],
        resume: Callable[[list[ExecutionInfo]], Awaitable[object]],
        dispatch: Callable[[Any, str | None, int], object] | None = None,
        versions: Callable[[], Awaitable[Collection[str] | None]] | None = None,
    ) -> None:
        self.store = store
        # A default name never comes back: once dead (and taken over), its node can be pruned.
        store.ephemeral = node is None
        self.node = store.attach(node if node is not None else default_node_name(), lease=lease)
        self.lease = lease
        self._loop = loop
        self._instances = instances
        self._templates = templates
        self._resume = resume
        self._versions = versions
        self._beating: asyncio.Task[None] | None = None
        self._claiming: asyncio.Task[None] | None = None
        self._beat_now: asyncio.Future[None] | None = None  # the heartbeat in flight, if any
        # Heartbeats on a thread of their own: the journal, loads and claims never delay them.
        self._beat_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"tukio-beat-{self.node}")
        self._dispatch = dispatch
        self._listening: asyncio.Task[None] | None = None
        #: The id of the last event of the other nodes read and dispatched here (None: not known yet).
        self.read: int | None = None
        self._on_read: list[Callable[[], object]] = []  # called once `read` is known
        self._wake = asyncio.Event()
        self._closed = False
        # A store may keep ownership without sharing events: then none are published.
        self._shares = store.shares_events
        # A store that cannot wake the nodes up (`SQLiteStore`) is read every `event_poll` seconds.
        self._poll = store.event_poll
        # Claims of dead nodes' work start one lease after the start: a crashed process
        # may be known dead at once (`SQLiteStore`), and `recover()` right after the engine's start
        # resumes (and returns) what it left.
        self._claims_from = loop.time() + lease
        #: Seconds a dead node with a default name is kept after its lease expired.
        self.prune_grace = PRUNE_GRACE
        self._beats = 0
        self._policies = Admissions(store, self.node, loop, instances)
        # Executions this node owns that do not run here yet (claimed, being resumed): they count
        # as running for the overrun policies from the moment they are owned.
        self._claimed = self._policies.claimed
        self._resuming: set[asyncio.Task[None]] = set()
        # A store that signals cancel requests (PostgreSQL NOTIFY): they are acted on at once,
        # not at the next look.
        self._cancels_wake = asyncio.Event()
        self._cancelling: asyncio.Task[None] | None = None
        self._left: asyncio.Future[None] | None = None  # done once closed and gone
        store.on_fenced = self._fenced
        #: Told of the executions this node lost to others, before they are cancelled here.
        self.on_lost: Callable[[list[str]], None] | None = None
        _local_nodes.setdefault(loop, set()).add(self.node)

    # -- start-up and recovery ------------------------------------------------------------
    def start(self) -> None:
        """Start heartbeating and looking for dead nodes' work (on the running loop), once."""
        if self._beating is None and not self._closed:
            self._beating = self._loop.create_task(self._beat_forever(), name=f"tukio-heartbeat-{self.node}")
            self._claiming = self._loop.create_task(self._claim_forever(), name=f"tukio-claims-{self.node}")
            self._listen()
            if self._poll is None:  # the store signals cancel requests
                self._cancelling = self._loop.create_task(self._cancels_forever(), name=f"tukio-cancels-{self.node}")

    def _listen(self) -> None:
        """Read the other nodes' events, unless another engine on this loop does (they share its broker)."""
        if self._dispatch is None or self._closed or _listeners.get(self._loop) is not None or not self._shares:
            return
        _listeners[self._loop] = self
        cursor = None
        if self._poll is not None:
            # A local file answers at once: from now on, no event is missed, even by a task
            # that starts listening before the reading task's first turn.
            try:
                cursor = self.read = self.store.event_cursor()
            except Exception:
                log.exception("node %s: reading the events cursor failed; reading it again", self.node)
        self._listening = self._loop.create_task(self._events_forever(cursor), name=f"tukio-events-{self.node}")

    async def recoverable(self) -> list[ExecutionInfo]:
        """Join (once), then list what this node may resume: its own and dead nodes' unfinished executions.

        What is listed counts as running here (for the overrun policies)
        until `resumed` is told of it.
        """
        self.start()
        # What another node asked to cancel (abort-running) is not resumed: it ends cancelled here.
        requested = set(await asyncio.to_thread(self.store.cancel_requests))
        async with self._policies.claiming():
            mine = await asyncio.to_thread(self.store.owned)
            self._claimed.update(i.exec_id for i in mine if i.exec_id not in self._instances)
        dropped = [i.exec_id for i in mine if i.exec_id in requested and i.exec_id not in self._instances]
        if dropped:
            await asyncio.to_thread(self.store.mark_cancelled, dropped)
            self._claimed.difference_update(dropped)
            log.warning("node %s: %d execution(s) cancelled by other nodes, not resumed", self.node, len(dropped))
            mine = [i for i in mine if i.exec_id not in dropped]
        self._cancel(requested, "another node aborted it (abort-running)")
        versions = await self._versions() if self._versions is not None else None
        claimed = await self._claim_all(versions)
        # What this node cannot take (its template is not loaded here, or its version cannot
        # run here): listed, so the engine says why.
        templates = self._templates()
        left = await asyncio.to_thread(self.store.stranded, templates, versions=versions)
        loaded = set(templates)
        for i, info in enumerate(left):
            if info.problem is None and info.template_id in loaded:
                left[i] = dataclasses.replace(info, problem=f"its template version {info.version} cannot run here")
        return mine + claimed + left

    def resumed(self, exec_ids: Iterable[str]) -> None:
        """The engine resumed (or gave up) these executions: they count as running here only while they run."""
        self._claimed.difference_update(exec_ids)

    async def _claim_all(self, versions: Collection[str] | None = None) -> list[ExecutionInfo]:
        templates = self._templates()
        claimed: list[ExecutionInfo] = []
        while templates:
            # No admission runs meanwhile: each one counts what this claim takes, or ran before it.
            async with self._policies.claiming():
                batch = await asyncio.to_thread(self.store.claim, templates, limit=CLAIM_BATCH, versions=versions)
                self._claimed.update(i.exec_id for i in batch)
            claimed.extend(batch)
            if len(batch) < CLAIM_BATCH:
                break
        if claimed:
            log.info("node %s took over %d execution(s) of dead node(s)", self.node, len(claimed))
        return claimed

    # -- the heartbeat ---------------------------------------------------------------------
    async def _beat_forever(self) -> None:
        period = max(self.lease / 3, MIN_PERIOD)
        while not self._closed:  # a beat may close the cluster (the node was replaced)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("node %s: heartbeat failed", self.node)
            await asyncio.sleep(period)

    async def beat(self) -> None:
        """Renew the lease now (or wait for the renewal in flight), and act on what it found.

        Raises:
            Exception: the store could not be reached.
        """
        if self._beat_now is None:
            self._beat_now = asyncio.ensure_future(self._renew())
        now = self._beat_now
        try:
            await asyncio.shield(now)
        finally:
            if self._beat_now is now and now.done():
                self._beat_now = None

    async def _renew(self) -> None:
        beat = await self._loop.run_in_executor(self._beat_thread, self.store.heartbeat)
        if beat == "replaced":
            log.error("node %s was restarted elsewhere (a newer epoch): cancelling its workflows", self.node)
            self._lose(list(self._instances), "node restarted elsewhere")
            self.close(leave=False)
            return
        if beat == "late":
            log.warning("node %s missed its lease: checking which executions it still owns", self.node)
            gone = await self._loop.run_in_executor(
                self._beat_thread, self.store.lost, [*self._instances, *self._claimed]
            )
            self._claimed.difference_update(gone)
            self._lose(sorted(gone), "taken over by another node while this one missed its lease")

    def owns(self) -> bool:
        """True while the node's lease holds by its own clock: it owns its executions, without asking.

        The deadline is the store's (`lease_expired`): renewed by each
        heartbeat that found the lease running, less a margin.
        """
        return not self.store.lease_expired()

    async def confirm(self, exec_ids: Collection[str]) -> list[str]:
        """Those of `exec_ids` this node still owns, to start their tasks now.

        No round trip while `owns()`; after the node's lease lapsed by its
        own clock (it was paused, say), a heartbeat first, then a fenced look
        at the store. What it lost is cancelled here.

        A claimed execution that an admission aborted ('abort-running')
        before it was resumed is recorded cancelled, and not listed.

        Raises:
            Exception: the store could not be reached.
        """
        gone: set[str] = set()
        if not self.owns() and exec_ids:
            await self.beat()
            gone = set(await self._loop.run_in_executor(self._beat_thread, self.store.lost, list(exec_ids)))
            if gone:
                self._claimed.difference_update(gone)
                self._lose(sorted(gone), "taken over by another node while this one missed its lease")
                log.warning("node %s: %d execution(s) taken over while it was late: not resumed", self.node, len(gone))
        aborted = self._policies.take_aborted(i for i in exec_ids if i not in gone)
        if aborted:  # an admission aborted them before they were resumed: they end here, cancelled
            await asyncio.to_thread(self.store.mark_cancelled, aborted)
            log.warning("node %s: %d claimed execution(s) aborted before they resumed", self.node, len(aborted))
        return [i for i in exec_ids if i not in gone and i not in aborted]

    # -- dead nodes' work, cancel requests ---------------------------------------------------
    async def _claim_forever(self) -> None:
        period = min(max(self.lease / 3, MIN_PERIOD), CLAIM_PERIOD)
        while not self._closed:
            await asyncio.sleep(period)
            try:
                await self._look()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("node %s: looking for dead nodes' work failed", self.node)

    async def _look(self) -> None:
        self._listen()  # the engine that read events on this loop may have stopped
        requested = await asyncio.to_thread(self._cancel_requests)
        if requested:
            self._cancel(requested, "another node aborted it (abort-running)")
        self._beats += 1
        if self._beats % PRUNE_EVERY == 0:
            await asyncio.to_thread(self.store.prune_nodes, self.prune_grace)
        if self._loop.time() < self._claims_from:
            return
        versions = await self._versions() if self._versions is not None else None
        claimed = await self._claim_all(versions)
        if claimed:
            # Resumed beside the next looks: loading many executions delays nothing else.
            task = self._loop.create_task(self._resume_claimed(claimed), name=f"tukio-resume-{self.node}")
            self._resuming.add(task)
            task.add_done_callback(self._resuming.discard)

    async def _resume_claimed(self, claimed: list[ExecutionInfo]) -> None:
        try:
            await self._resume(claimed)
        except Exception:
            log.exception("node %s: resuming %d claimed execution(s) failed", self.node, len(claimed))
        finally:
            self.resumed(i.exec_id for i in claimed)

    def _cancel_requests(self) -> list[str]:
        """(In a thread, at each look.) Listen for signalled cancel requests (again after a
        lost connection), and read this node's requests, in case a signal was missed."""
        if self._poll is None:
            try:
                self.store.listen_cancels(self._signalled)
            except Exception:
                log.exception("node %s: cannot listen for cancel requests (read at each heartbeat)", self.node)
        return self.store.cancel_requests()

    def _signalled(self) -> None:
        """(From the store's thread.) An admission asked some node to cancel executions."""
        with contextlib.suppress(RuntimeError):  # a closed loop: nothing runs any more
            self._loop.call_soon_threadsafe(self._cancels_wake.set)

    async def _cancels_forever(self) -> None:
        """Act on cancel requests as soon as the store signals one."""
        while not self._closed:
            await self._cancels_wake.wait()
            self._cancels_wake.clear()
            try:
                requested = await asyncio.to_thread(self.store.cancel_requests)
            except Exception:
                log.exception("node %s: acting on cancel requests failed", self.node)
                continue
            self._cancel(requested, "another node aborted it (abort-running)")

    # -- overrun policies across the nodes (see `tukio._admission`) ----------------------------------
    @property
    def policies(self) -> Admissions:
        """This node's side of the overrun policies across the nodes."""
        return self._policies

    async def admit(
        self, workflow: Workflow, data: Any, running: Callable[[], Iterable[str]] = tuple
    ) -> list[Any] | None:
        """Ask the store to admit `workflow` (not started yet) under its template's policy.

        See `Admissions.admit`: what this node claimed and has not resumed
        yet counts as running here.

        Args:
            workflow: the new workflow.
            data: its triggering data.
            running: returns the ids of the instances of its template running on this
                node that its policy counts, asked once the admission may run (under 'skip-until-unlock', the
                locked ones: an unlock counts here before the store has it).

        Returns:
            None when the policy says skip; else what the workflow waits for before it starts.
        """
        return await self._policies.admit(workflow, data, running)

    def unlocked(self, workflow: Workflow) -> None:
        """`workflow` unlocked while it runs: record it, so other nodes no longer skip for it."""
        self._policies.unlocked(workflow)

    # -- events shared by the nodes ------------------------------------------------------------
    async def publish(self, data: Any, topic: str | None) -> int | None:
        """Hand `data` (on `topic`) to the listening tasks of the other nodes.

        Returns:
            The event's id in the store (None: not kept, there is no other
            node or the store could not be reached); the caller dispatches
            it here with that id (see `listen_mark`).
        """
        if not self._shares:
            return None
        try:
            event_id = await asyncio.to_thread(self.store.publish, data, topic)
        except Exception:
            log.exception("node %s: data on topic %s not shared with the other nodes", self.node, topic)
            return None
        if not event_id:
            return None
        if event_id > _published.get(self._loop, 0):
            _published[self._loop] = event_id
        return event_id

    async def _events_forever(self, cursor: int | None = None) -> None:
        assert self._dispatch is not None
        period = max(self.lease / 3, MIN_PERIOD)
        if cursor is None:
            cursor = await asyncio.to_thread(self.store.event_cursor)
        self.read = cursor
        waiting, self._on_read = self._on_read, []
        for call in waiting:
            call()
        loop = self._loop

        def wake() -> None:  # from the store's thread
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

        beats = 0
        broker = get_broker(loop)
        # (Not `while True`: on Python 3.10 and 3.11, `wait_for` below may swallow the cancellation
        # of `close()` when the wake-up comes at the same moment; the task would then run on.)
        while not self._closed:
            try:
                if self._poll is None:
                    await asyncio.to_thread(self.store.listen, wake)  # again after a lost connection
                events = await asyncio.to_thread(self.store.events_after, cursor)
                here = _local_nodes.get(self._loop, set())
                for event_id, origin, topic, data in events:
                    cursor = self.read = event_id
                    if origin not in here:  # engines on this loop share its broker: dispatched already
                        self._dispatch(data, topic, event_id)
                beats += 1
                if beats % 1000 == 0:
                    await asyncio.to_thread(self.store.prune_events, EVENTS_KEPT)
                if len(events) == 1000:
                    continue  # more are waiting
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("node %s: reading the events of the other nodes failed", self.node)
            wait = period
            if self._poll is not None:  # fast while a task (any handler) listens here
                wait = self._poll if broker.listened() else max(self._poll, min(period, IDLE_POLL))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()

    # -- fencing ----------------------------------------------------------------------------
    def _fenced(self, exec_ids: list[str]) -> None:
        """The store refused writes for `exec_ids` (called from the writing thread)."""
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._lose(exec_ids, "its writes were refused: another node owns it")
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nothing runs any more
            self._loop.call_soon_threadsafe(self._lose, exec_ids, "its writes were refused: another node owns it")

    def _lose(self, exec_ids: list[str], why: str) -> None:
        """Other nodes own `exec_ids` now: say so (`on_lost`), then cancel them here."""
        if exec_ids and self.on_lost is not None:
            self.on_lost(exec_ids)
        self._cancel(exec_ids, why)

    def _cancel(self, exec_ids: Iterable[str], why: str) -> None:
        for exec_id in exec_ids:
            workflow = self._instances.get(exec_id)
            if workflow is not None and not workflow.done():
                log.warning("[%s] workflow cancelled on node %s: %s", exec_id, self.node, why)
                workflow.cancel()

    # -- leaving ------------------------------------------------------------------------------
    def close(self, *, leave: bool = True) -> asyncio.Future[None]:
        """Stop heartbeating and claiming; with `leave`, end the lease now so others take over at once.

        Nothing blocks the loop: the lease ends on the heartbeat's thread.

        Returns:
            What is done once the lease ended (at once without `leave`).
        """
        if self._left is not None:
            return self._left
        self._closed = True
        self._left = left = self._loop.create_future()
        _local_nodes.get(self._loop, set()).discard(self.node)
        if _listeners.get(self._loop) is self:
            del _listeners[self._loop]
        self._policies.close()
        for task in self._tasks():
            if task is not asyncio.current_task():
                task.cancel()
        if leave:
            ended = self._loop.run_in_executor(self._beat_thread, self._leave)
            ended.add_done_callback(functools.partial(_settle, left))
        else:
            left.set_result(None)
        self._beat_thread.shutdown(wait=False)  # its last call (the goodbye) still runs
        return left

    def _leave(self) -> None:
        """(On the heartbeat's thread.) End the lease; a node that cannot reach the store lets it run out."""
        try:
            self.store.leave()
        except Exception:
            log.exception("node %s: could not end its lease (it expires by itself)", self.node)

    def _tasks(self) -> list[asyncio.Task[Any]]:
        """The node's own tasks: heartbeat, claims, resumes, event and cancel listeners."""
        tasks = (self._beating, self._claiming, self._listening, self._cancelling, *self._resuming)
        return [t for t in tasks if t is not None]

    async def wait_closed(self) -> None:
        """Wait until the tasks `close()` stopped (heartbeat, claims, resumes, listeners) have ended."""
        current = asyncio.current_task()
        await asyncio.gather(*(t for t in self._tasks() if t is not current), return_exceptions=True)


def _settle(future: asyncio.Future[None], _: object) -> None:
    if not future.done():
        future.set_result(None)
