"""Several engines, one journal: nodes, leases, takeovers and fencing.

An engine whose store can share its journal (`PostgresStore`, `SQLiteStore`)
is a *node*: every execution it starts is owned by it, under its current
*epoch*. The node renews a lease in the database every third of it (a
heartbeat). A node whose lease expired, or whose crashed process let go of
its database session (PostgreSQL) or of its lock file (SQLite), is dead:
each live node then takes over its unfinished executions (an atomic claim:
each is taken by one node only) and resumes them as `Engine.recover` does.

The database refuses a write for an execution unless it comes from its
owner under the owner's current epoch (fencing). A node that comes back after
losing ownership (it was paused, or cut off, past its lease) has its copies
of those workflows cancelled when its writes are refused, or as soon as its
next heartbeat finds it was late. A node restarted under the same name takes
its unfinished executions back at once, under a new epoch, which fences any
leftover process of that name.

Overrun policies hold across the nodes: with a shared store, the engine asks
the store to admit each trigger of a template whose policy is not
'start-new' (`admit`, one transaction under a lock of the template, see
`tukio.store._gate`), and 'abort-running' cancels the running instance
wherever it runs (a cancel request its owner acts on at its next heartbeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from tukio._report import iso_from_timestamp, storable
from tukio.broker import get_broker
from tukio.policy import Decision, OverrunPolicy
from tukio.store.base import UNFINISHED, ExecutionRecord

if TYPE_CHECKING:
    from tukio.store.base import ExecutionInfo
    from tukio.workflow.workflow import Workflow

__all__ = ["DEFAULT_LEASE", "Cluster", "LeasedStore", "default_node_name"]

log = logging.getLogger(__name__)

#: Seconds a node stays alive without renewing its lease.
DEFAULT_LEASE = 5.0
#: Seconds an event published for the other nodes is kept (a node cut off longer misses it).
EVENTS_KEPT = 3600.0
#: Shortest time between two heartbeats (however short the lease).
MIN_PERIOD = 0.05
#: How many executions one claim takes at most (claims repeat until none is left).
CLAIM_BATCH = 100
#: Seconds a dead node with a default name stays listed after its lease expired (then it is pruned).
PRUNE_GRACE = 60.0
#: Heartbeats between two prunings of dead nodes.
PRUNE_EVERY = 30
#: Seconds between two looks at whether executions aborted on other nodes have ended.
WATCH_PERIOD = 0.05
#: Longest pause between two reads of a polled store's events while no task listens (see `SQLiteStore.event_poll`).
IDLE_POLL = 0.5

_engines = itertools.count(1)
#: The nodes of the engines of each loop (they share the loop's broker).
_local_nodes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[str]] = weakref.WeakKeyDictionary()
#: The one cluster of each loop that dispatches the other nodes' events there.
_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Cluster] = weakref.WeakKeyDictionary()


def default_node_name() -> str:
    """A node name unique to this engine: host, process id and a counter."""
    return f"{socket.gethostname()}-{os.getpid()}-{next(_engines)}"


@runtime_checkable
class LeasedStore(Protocol):
    """What a store offers to be shared by several nodes (see `PostgresStore`)."""

    node: str | None
    on_fenced: Callable[[list[str]], None] | None
    ephemeral: bool

    def attach(self, node: str | None = None, *, lease: float = DEFAULT_LEASE) -> str:
        """Name the node this store writes for."""

    def join(self) -> int:
        """Start a new epoch of the node and take its unfinished executions back; return the epoch."""

    def heartbeat(self) -> Literal["alive", "late", "replaced"]:
        """Renew the node's lease; say whether it had expired or the node was replaced."""

    def owned(self) -> list[ExecutionInfo]:
        """The unfinished executions the node owns."""

    def claim(self, template_ids: Iterable[str], *, limit: int = CLAIM_BATCH) -> list[ExecutionInfo]:
        """Take over unfinished executions of dead nodes."""

    def lost(self, exec_ids: Iterable[str]) -> list[str]:
        """Those of `exec_ids` the node no longer owns."""

    def leave(self) -> None:
        """End the node's lease now."""

    def publish(self, data: Any, topic: str | None) -> int:
        """Keep an event for the other nodes; return its id."""

    def event_cursor(self) -> int:
        """The id of the last event published so far."""

    def events_after(self, cursor: int) -> list[tuple[int, str | None, str | None, Any]]:
        """Events other nodes published after `cursor`: ``(id, origin, topic, data)``."""

    def prune_events(self, older_than: float) -> int:
        """Delete old events."""

    def listen(self, wake: Callable[[], None]) -> bool:
        """Call `wake` whenever an event is published."""

    def admit(self, policy: OverrunPolicy, begin: ExecutionRecord, here: Collection[str]) -> tuple[Decision, list[str]]:
        """Apply an overrun policy across the nodes; unless it skips, record the begin (see `tukio.store._gate`)."""

    def cancel_requests(self) -> list[str]:
        """Settle the cancel requests no live node will act on; return this node's."""

    def mark_cancelled(self, exec_ids: Iterable[str]) -> None:
        """Record unfinished executions of this node as cancelled."""

    def unfinished_among(self, exec_ids: Iterable[str]) -> list[str]:
        """Those of `exec_ids` that have not ended."""

    def unlock(self, exec_ids: Iterable[str]) -> None:
        """Record that executions of this node unlocked."""

    def prune_nodes(self, grace: float) -> list[str]:
        """Delete dead nodes with a default name that own nothing unfinished."""


class Cluster:
    """One engine's membership of a cluster: heartbeats, takeovers and fencing.

    The engine makes one when its store is a `LeasedStore`; the heartbeat
    runs on the engine's loop (the store's calls on a thread).

    Args:
        store: the shared store.
        node: the node's name (`default_node_name()` when None).
        lease: seconds the node stays alive without a heartbeat.
        loop: the engine's loop.
        instances: the engine's running workflows by execution id.
        templates: the ids of the templates the engine can run.
        resume: resumes claimed executions in the engine.
        dispatch: delivers ``(data, topic)`` published by another node to
            this engine's listening tasks.

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
        dispatch: Callable[[Any, str | None], object] | None = None,
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
        self._beating: asyncio.Task[None] | None = None
        self._dispatch = dispatch
        self._listening: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False
        # A store may keep ownership without sharing events: then none are published.
        self._shares = bool(getattr(store, "shares_events", True))
        # A store that cannot wake the nodes up (`SQLiteStore`) is read every `event_poll` seconds.
        self._poll: float | None = getattr(store, "event_poll", None)
        # Heartbeats claim dead nodes' work only from one lease after the start: a crashed process
        # may be known dead at once (`SQLiteStore`), and `recover()` right after the engine's start
        # resumes (and returns) what it left.
        self._claims_from = loop.time() + lease
        #: Seconds a dead node with a default name is kept after its lease expired.
        self.prune_grace = PRUNE_GRACE
        self._beats = 0
        self._admitting: set[str] = set()  # executions admitted by the store, not yet running here
        self._unlocked: list[str] = []  # executions that unlocked, to record
        self._unlocking: asyncio.Task[None] | None = None
        self._watched: dict[str, asyncio.Future[None]] = {}  # executions aborted on other nodes
        self._watching: asyncio.Task[None] | None = None
        # A store that signals cancel requests (PostgreSQL NOTIFY): they are acted on at once,
        # not at the next heartbeat.
        self._cancels_wake = asyncio.Event()
        self._cancelling: asyncio.Task[None] | None = None
        store.on_fenced = self._fenced
        #: Told of the executions this node lost to others, before they are cancelled here.
        self.on_lost: Callable[[list[str]], None] | None = None
        _local_nodes.setdefault(loop, set()).add(self.node)

    # -- start-up and recovery ------------------------------------------------------------
    def start(self) -> None:
        """Start heartbeating (on the running loop), once."""
        if self._beating is None and not self._closed:
            self._beating = self._loop.create_task(self._beat_forever(), name=f"tukio-heartbeat-{self.node}")
            self._listen()
            if hasattr(self.store, "listen_cancels"):
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
                cursor = self.store.event_cursor()
            except Exception:
                log.exception("node %s: reading the events cursor failed; reading it again", self.node)
        self._listening = self._loop.create_task(self._events_forever(cursor), name=f"tukio-events-{self.node}")

    async def recoverable(self) -> list[ExecutionInfo]:
        """Join (once), then list what this node may resume: its own and dead nodes' unfinished executions."""
        self.start()
        # What another node asked to cancel (abort-running) is not resumed: it ends cancelled here.
        requested = set(await asyncio.to_thread(self.store.cancel_requests))
        mine = await asyncio.to_thread(self.store.owned)
        dropped = [i.exec_id for i in mine if i.exec_id in requested and i.exec_id not in self._instances]
        if dropped:
            await asyncio.to_thread(self.store.mark_cancelled, dropped)
            log.warning("node %s: %d execution(s) cancelled by other nodes, not resumed", self.node, len(dropped))
            mine = [i for i in mine if i.exec_id not in dropped]
        self._cancel(requested, "another node aborted it (abort-running)")
        claimed = await self._claim_all()
        # What no node can take (its template is not loaded here): listed, so the engine says why.
        stranded = getattr(self.store, "stranded", None)
        left = await asyncio.to_thread(stranded, self._templates()) if stranded is not None else []
        return mine + claimed + left

    async def _claim_all(self) -> list[ExecutionInfo]:
        templates = self._templates()
        claimed: list[ExecutionInfo] = []
        while templates:
            batch = await asyncio.to_thread(self.store.claim, templates, limit=CLAIM_BATCH)
            claimed.extend(batch)
            if len(batch) < CLAIM_BATCH:
                break
        if claimed:
            log.info("node %s took over %d execution(s) of dead node(s)", self.node, len(claimed))
        return claimed

    # -- the heartbeat ---------------------------------------------------------------------
    async def _beat_forever(self) -> None:
        period = max(self.lease / 3, MIN_PERIOD)
        while True:
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("node %s: heartbeat failed", self.node)
            await asyncio.sleep(period)

    async def _beat(self) -> None:
        self._listen()  # the engine that read events on this loop may have stopped
        beat = await asyncio.to_thread(self.store.heartbeat)
        if beat == "replaced":
            log.error("node %s was restarted elsewhere (a newer epoch): cancelling its workflows", self.node)
            self._lose(list(self._instances), "node restarted elsewhere")
            self.close(leave=False)
            return
        if beat == "late":
            log.warning("node %s missed its lease: checking which executions it still owns", self.node)
            gone = await asyncio.to_thread(self.store.lost, list(self._instances))
            self._lose(gone, "taken over by another node while this one missed its lease")
        requested = await asyncio.to_thread(self._cancel_requests)
        if requested:
            self._cancel(requested, "another node aborted it (abort-running)")
        self._beats += 1
        if self._beats % PRUNE_EVERY == 0:
            await asyncio.to_thread(self.store.prune_nodes, self.prune_grace)
        if self._loop.time() < self._claims_from:
            return
        claimed = await self._claim_all()
        if claimed:
            await self._resume(claimed)

    def _cancel_requests(self) -> list[str]:
        """(In a thread, at each heartbeat.) Listen for signalled cancel requests (again after a
        lost connection), and read this node's requests, in case a signal was missed."""
        listen = getattr(self.store, "listen_cancels", None)
        if listen is not None:
            try:
                listen(self._signalled)
            except Exception:
                log.exception("node %s: cannot listen for cancel requests (read at each heartbeat)", self.node)
        return self.store.cancel_requests()

    def _signalled(self) -> None:
        """(From the store's thread.) An admission asked some node to cancel executions."""
        with contextlib.suppress(RuntimeError):  # a closed loop: nothing runs any more
            self._loop.call_soon_threadsafe(self._cancels_wake.set)

    async def _cancels_forever(self) -> None:
        """Act on cancel requests as soon as the store signals one."""
        while True:
            await self._cancels_wake.wait()
            self._cancels_wake.clear()
            try:
                requested = await asyncio.to_thread(self.store.cancel_requests)
            except Exception:
                log.exception("node %s: acting on cancel requests failed", self.node)
                continue
            self._cancel(requested, "another node aborted it (abort-running)")

    # -- overrun policies across the nodes ------------------------------------------------------------
    async def admit(self, workflow: Workflow, data: Any, running: Iterable[str] = ()) -> list[Any] | None:
        """Ask the store to admit `workflow` (not started yet) under its template's policy.

        Unless the policy says skip, the store has recorded the workflow's
        begin (owned by this node) when this returns.

        Args:
            workflow: the new workflow.
            data: its triggering data.
            running: the ids of the instances of its template running on this node.

        Returns:
            None when the policy says skip; else what the workflow waits
            for before it starts (abort-running): this node's instances, and
            stand-ins that end when the instances of other nodes have ended.
        """
        policy = workflow.template.policy
        begin = self._begin_record(workflow, data)
        uid = workflow.uid
        self._admitting.add(uid)
        try:
            here = [*running, *self._admitting]
            soon = getattr(self.store, "admit_soon", None)  # a store that need not block a thread
            future = soon(policy, begin, here) if soon is not None else None
            if future is not None:
                decision, waits = await asyncio.wrap_future(future)
            else:
                decision, waits = await asyncio.to_thread(self.store.admit, policy, begin, here)
        finally:
            self._admitting.discard(uid)
        if decision is Decision.skip:
            return None
        previous: list[Any] = []
        for exec_id in waits:
            local = self._instances.get(exec_id)
            previous.append(local if local is not None else self._watch(exec_id))
        if previous:
            log.info("[%s] waits for %d aborted execution(s) to end (abort-running)", uid, len(previous))
        return previous

    def _begin_record(self, workflow: Workflow, data: Any) -> ExecutionRecord:
        dumps = self.store.serializer.dumps if hasattr(self.store, "serializer") else None
        template: str | bytes | None = None
        event: str | bytes | None = None
        if dumps is not None:
            # What cannot be serialized is left out: the journal then records the workflow as failed.
            with contextlib.suppress(Exception):
                template, event = _storable(dumps(workflow.template.as_dict())), _storable(dumps(data))
        return ExecutionRecord(
            storable(workflow.uid),
            storable(str(workflow.template.uid)),
            UNFINISHED,
            iso_from_timestamp(time.time()),
            template=template,
            event=event,
        )

    def unlocked(self, workflow: Workflow) -> None:
        """`workflow` unlocked while it runs: record it, so other nodes no longer skip for it."""
        if workflow.done() or self._closed:
            return  # an ended execution does not count
        self._unlocked.append(workflow.uid)
        if self._unlocking is None:
            self._unlocking = self._loop.create_task(self._record_unlocks(), name=f"tukio-unlock-{self.node}")

    async def _record_unlocks(self) -> None:
        try:
            while self._unlocked:
                ids, self._unlocked = self._unlocked, []
                try:
                    await asyncio.to_thread(self.store.unlock, ids)
                except Exception:
                    log.exception("node %s: could not record that %d execution(s) unlocked", self.node, len(ids))
        finally:
            self._unlocking = None

    def _watch(self, exec_id: str) -> asyncio.Future[None]:
        """A stand-in for an execution of another node: it ends once the store has the execution ended."""
        ended = self._watched.get(exec_id)
        if ended is None:
            ended = self._watched[exec_id] = _Elsewhere(loop=self._loop)
        if self._watching is None:
            self._watching = self._loop.create_task(self._watch_forever(), name=f"tukio-watch-{self.node}")
        return ended

    async def _watch_forever(self) -> None:
        try:
            while self._watched:
                await asyncio.sleep(WATCH_PERIOD)
                try:
                    left = set(await asyncio.to_thread(self.store.unfinished_among, list(self._watched)))
                except Exception:
                    log.exception("node %s: could not check aborted executions of other nodes", self.node)
                    continue
                for exec_id in [i for i in self._watched if i not in left]:
                    ended = self._watched.pop(exec_id)
                    if not ended.done():
                        ended.set_result(None)
        finally:
            self._watching = None

    # -- events shared by the nodes ------------------------------------------------------------
    async def publish(self, data: Any, topic: str | None) -> None:
        """Hand `data` (on `topic`) to the listening tasks of the other nodes."""
        if not self._shares:
            return
        try:
            await asyncio.to_thread(self.store.publish, data, topic)
        except Exception:
            log.exception("node %s: data on topic %s not shared with the other nodes", self.node, topic)

    async def _events_forever(self, cursor: int | None = None) -> None:
        assert self._dispatch is not None
        period = max(self.lease / 3, MIN_PERIOD)
        if cursor is None:
            cursor = await asyncio.to_thread(self.store.event_cursor)
        loop = self._loop

        def wake() -> None:  # from the store's thread
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

        beats = 0
        broker = get_broker(loop)
        while True:
            try:
                if self._poll is None:
                    await asyncio.to_thread(self.store.listen, wake)  # again after a lost connection
                events = await asyncio.to_thread(self.store.events_after, cursor)
                here = _local_nodes.get(self._loop, set())
                for event_id, origin, topic, data in events:
                    cursor = event_id
                    if origin not in here:  # engines on this loop share its broker: dispatched already
                        self._dispatch(data, topic)
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
    def close(self, *, leave: bool = True) -> None:
        """Stop heartbeating; with `leave`, end the lease now so others take over at once."""
        if self._closed:
            return
        self._closed = True
        _local_nodes.get(self._loop, set()).discard(self.node)
        if _listeners.get(self._loop) is self:
            del _listeners[self._loop]
        for task in (self._beating, self._listening, self._watching, self._cancelling):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if leave:
            try:
                self.store.leave()
            except Exception:
                log.exception("node %s: could not end its lease (it expires by itself)", self.node)


class _Elsewhere(asyncio.Future):  # type: ignore[type-arg]
    """An execution of another node that a new workflow waits for (abort-running).

    Its cancel request is in the store already: `cancel()` does nothing here;
    the stand-in ends when the execution has ended, wherever it ran.
    """

    def cancel(self, msg: Any = None) -> bool:
        return False


def _storable(blob: str | bytes) -> str | bytes:
    return storable(blob) if isinstance(blob, str) else blob
