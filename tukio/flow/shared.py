"""`SharedFlow`: flow control in a store shared by several engines (SQLite, PostgreSQL).

Every governed trigger (a template with ``"concurrency"`` or ``"rate"``, or a
trigger with a key, a priority or a delay) becomes a row of the store's
durable queue, committed before `Engine.trigger` returns. A *step* of a
template's queue (one transaction, see `tukio.store._flowsql`) inserts the
new rows of this engine, admits queued rows in order (priority, then
arrival; any node's) while the template's slots and rate allow, and hands
this engine its admitted rows to launch. A row admitted for another engine
wakes it (PostgreSQL: NOTIFY; SQLite: it looks every `flow_poll` seconds
while it has rows waiting).

An engine steps a template when it queues triggers, when one of its
executions of a template with a limit has ended (once the end is
committed: until then the slot is held), at a due time or the end of a
rate window, and every `SWEEP` seconds (rows of engines that stopped, and
its own after a restart, are admitted then: an admitted row of a dead
engine is taken over like any of its executions).

An execution holds a slot from its admission to its end, wherever it runs:
a dead engine's executions hold theirs until another engine takes them
over and they end. Idempotency keys are the execution ids: the store keeps
one row per id, so a key triggers one execution across engines and
restarts, for as long as the store keeps the execution.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import json
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tukio._admission import begin_record
from tukio.flow.clock import Clock, SystemClock
from tukio.flow.control import FlowHost, FlowRequest, QueuedExecution
from tukio.flow.keys import DEFAULT_RETENTION, KeyRegistry, key_exec_id
from tukio.flow.local import LocalFlow, describe
from tukio.recorder import NULL_RECORDER
from tukio.store._flowsql import FlowRow, Limits

if TYPE_CHECKING:
    from tukio.event import Event
    from tukio.store._flowsql import FlowStore
    from tukio.workflow.template import WorkflowTemplate
    from tukio.workflow.workflow import Workflow

__all__ = ["SWEEP", "SharedFlow"]

log = logging.getLogger(__name__)

#: Seconds between two steps of every template with a limit (rows of stopped engines start then).
SWEEP = 1.0


@dataclass(eq=False)
class _Ticket:
    """One trigger of this engine in the shared queue."""

    workflow: Workflow
    event: Event
    timeout: float | None
    request: FlowRequest
    seq: int
    queued_at: float
    row: FlowRow
    committed: asyncio.Future[bool]
    started: bool = False


def limits_of(template: WorkflowTemplate) -> Limits:
    """The limits the store applies to `template`'s queue."""
    rate = template.rate
    return Limits(
        template.concurrency,
        template.concurrency_key is not None,
        (int(rate["limit"]), float(rate["period"])) if rate is not None else None,
    )


def partition_text(value: Hashable) -> str:
    """The store's text of a ``concurrency_key`` value ('' for none): equal values, equal texts."""
    if value is None:
        return ""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


class SharedFlow(LocalFlow):
    """Flow control in the engine's shared store: limits, queue, rates, keys and delays across engines.

    `Engine` makes one when its store can be shared (`SQLiteStore`,
    `PostgresStore`) and no `flow` is given.

    Args:
        max_running: at most this many executions run at once in this
            engine (a per-node limit; None: none). Rows the store admitted
            for this engine beyond it wait here, holding their slots.
        clock: the clock of delays and key retention in memory.
        key_retention: seconds an ended execution stays known by its key
            in memory (the store knows it for as long as it keeps it).

    Raises:
        ValueError: `max_running` is not a positive integer.
    """

    def __init__(
        self, *, max_running: int | None = None, clock: Clock | None = None, key_retention: float = DEFAULT_RETENTION
    ) -> None:
        super().__init__(max_running=max_running, clock=clock if clock is not None else SystemClock())
        self._keys = KeyRegistry(key_retention)
        self._tickets: dict[str, _Ticket] = {}  # waiting in the store, by execution id
        self._new: dict[str, list[_Ticket]] = {}  # to insert at the next step, by template
        self._dirty: set[str] = set()
        self._wakes: dict[str, float] = {}
        self._cancelled: list[str] = []
        self._ready: collections.deque[_Ticket] = collections.deque()  # admitted, waiting for max_running
        self._shared_seq = itertools.count()
        self._kick: asyncio.Event | None = None
        self._pump: asyncio.Task[None] | None = None
        self._listening = False
        self._look_launches = False  # another engine may have admitted rows of this one
        self._look_orphans = False  # a step failed: rows it admitted for this engine may wait
        self._store: FlowStore | None = None
        self._stored_versions: set[str] = set()  # template versions the store keeps (not sent again)

    # -- FlowControl -----------------------------------------------------------------
    def attach(self, host: FlowHost) -> None:
        """Bind to the engine (see `FlowControl.attach`).

        Raises:
            RuntimeError: it already serves another engine.
            ValueError: the engine's store cannot be shared.
        """
        super().attach(host)
        from tukio.store._flowsql import FlowStore

        store: object = host.store
        if not isinstance(store, FlowStore):
            raise ValueError(f"SharedFlow needs a store shared by engines (SQLite, PostgreSQL), not {store!r}")
        self._store = store
        # The pump starts with the engine: rows queued by others (or by an earlier run of this node) start
        # too. (Made outside a loop, it starts with the first trigger.)
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().call_soon(self._ensure_pump)

    def governs(self, template: WorkflowTemplate) -> bool:
        """True when `template` has a concurrency or rate limit, or `max_running` is set."""
        return self.max_running is not None or template.concurrency is not None or template.rate is not None

    async def known(self, request: FlowRequest) -> Workflow | str | None:
        """The execution `request.key` names in this engine (the store is asked as the trigger is queued)."""
        if request.key is None:
            return None
        exec_id = key_exec_id(request.template_id, request.key)
        workflow = self._keys.get(exec_id, self._clock.time())
        if workflow is None and self._host is not None:
            workflow = self._host.find(exec_id)
        return workflow

    async def submit(
        self, workflow: Workflow, event: Event, timeout: float | None, request: FlowRequest
    ) -> Workflow | None:
        """Queue `workflow` in the store; return once its row is committed (started or waiting).

        Returns:
            The workflow; None when its key names an execution the store
            already holds that does not run in this engine.
        """
        assert self._store is not None, "SharedFlow.attach() was not called"
        assert self._host is not None
        if request.key is not None:
            workflow.uid = key_exec_id(request.template_id, request.key)
        if self._closed:
            workflow.cancel()
            return workflow
        begin = begin_record(self._store.serializer, workflow, event.data, self._stored_versions)
        row = FlowRow(begin, request.priority, partition_text(request.partition), request.due, request.key is not None)
        loop = asyncio.get_running_loop()
        ticket = _Ticket(
            workflow, event, timeout, request, next(self._shared_seq), self._clock.time(), row, loop.create_future()
        )
        self._new.setdefault(request.template_id, []).append(ticket)
        self._wake(request.template_id)
        if not await ticket.committed:  # the store holds this key's execution already
            known = self._keys.get(workflow.uid, self._clock.time()) or self._host.find(workflow.uid)
            return known
        if request.key is not None:
            self._keys.add(workflow)
        return workflow

    def ended(self, workflow: Workflow) -> None:
        """A workflow this flow launched ended: free its place here; step its queue once its end is committed."""
        request = self._held.pop(workflow, None)
        if request is not None:
            if request.key is not None:
                self._keys.ended(workflow, self._clock.time())
            self._running -= 1
            self._launch_ready()
        template = workflow.template  # (one resumed from the store held a slot too)
        if template.concurrency is not None and self._host is not None and self._host.after_commit is not None:
            self._host.after_commit(functools.partial(self._wake, template.uid))

    def queued(self, template_id: str | None = None) -> list[QueuedExecution]:
        """This engine's executions waiting in the store's queue (positions among this engine's)."""
        now = self._clock.time()
        tickets = [t for t in self._tickets.values() if template_id is None or t.request.template_id == template_id]
        out: list[QueuedExecution] = []
        by_template: dict[str, list[_Ticket]] = {}
        for ticket in tickets:
            by_template.setdefault(ticket.request.template_id, []).append(ticket)
        for group in by_template.values():
            ready = sorted((t for t in group if not _delayed(t, now)), key=lambda t: (-t.request.priority, t.seq))
            delayed = sorted((t for t in group if _delayed(t, now)), key=lambda t: (t.request.due or 0.0, t.seq))
            out.extend(_describe(t, i) for i, t in enumerate(ready, 1))
            out.extend(_describe(t, None) for t in delayed)
        return out

    def close(self) -> None:
        """The engine stops: start nothing more; what waits stays queued in the store (another engine starts it)."""
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()
        for tickets in self._new.values():
            for ticket in tickets:
                if not ticket.committed.done():
                    ticket.committed.set_result(True)
        for ticket in [*self._tickets.values(), *self._ready, *(t for ts in self._new.values() for t in ts)]:
            _drop(ticket.workflow)
        self._tickets.clear()
        self._ready.clear()
        self._new.clear()

    # -- the pump ---------------------------------------------------------------------
    def _wake(self, template_id: str) -> None:
        if self._closed:
            return
        self._dirty.add(template_id)
        self._ensure_pump()
        assert self._kick is not None
        self._kick.set()

    def _ensure_pump(self) -> None:
        if self._pump is None and not self._closed:
            self._kick = asyncio.Event()
            self._pump = asyncio.get_running_loop().create_task(self._pump_forever(), name="tukio-flow")

    async def _pump_forever(self) -> None:
        try:
            await self._pump_loop()
        finally:  # its connection, if the store gave it one of its own
            if self._store is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(self._store.flow_release())

    async def _pump_loop(self) -> None:
        assert self._kick is not None
        kick = self._kick
        next_sweep = 0.0
        while not self._closed:
            try:
                next_sweep = await self._pump_once(next_sweep)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store failed: try again at the next sweep
                log.error("flow control: %s", exc)
                next_sweep = time.time() + SWEEP
            if kick.is_set():  # woken while stepping: step again at once
                kick.clear()
                continue
            timeout = next_sweep - time.time()
            if self._wakes:
                timeout = min(timeout, min(self._wakes.values()) - time.time())
            poll = self._store.flow_poll if self._store is not None else None
            if poll is not None and self._tickets:  # SQLite: look whether another engine admitted ours
                timeout = min(timeout, poll)
                self._look_launches = True
            if timeout > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(kick.wait(), timeout)
            kick.clear()

    async def _pump_once(self, next_sweep: float) -> float:
        """Step the templates that need it, launch what others admitted for us; return the next sweep's time."""
        store = self._store
        assert store is not None
        if store.flow_poll is None and not self._listening:
            await self._listen()
        now = time.time()
        sweeping = now >= next_sweep
        if sweeping:
            next_sweep = now + SWEEP
            await self._sweep()
        due = {tid for tid, at in self._wakes.items() if at <= now}
        for tid in due:
            del self._wakes[tid]
        templates = self._dirty | due
        self._dirty = set()
        for template_id in templates:
            await self._step(template_id, sweeping or template_id in due)
        if self._look_launches:
            self._look_launches = False
            await self._take_launches()
        if self._cancelled:
            cancelled, self._cancelled = self._cancelled, []
            await asyncio.to_thread(store.flow_cancel, cancelled)
        return next_sweep

    async def _listen(self) -> None:
        assert self._store is not None
        loop = asyncio.get_running_loop()

        def woken() -> None:  # from the store's thread: a row of ours was admitted, or the connection was lost
            loop.call_soon_threadsafe(self._woken)

        try:
            await asyncio.to_thread(self._store.flow_listen, woken)
            self._listening = True
        except Exception as exc:
            log.warning("flow control: cannot listen for admissions (looking every %.1fs): %s", SWEEP, exc)

    def _woken(self) -> None:
        self._listening = False  # (again if the connection was lost: listening again costs nothing otherwise)
        self._look_launches = True
        if self._kick is not None:
            self._kick.set()

    async def _sweep(self) -> None:
        """Step every loaded template with a limit, and those with queued rows (of any engine)."""
        assert self._store is not None
        assert self._host is not None
        self._look_launches = True
        if self._look_orphans:
            self._look_orphans = False
            await self._launch_orphans()
        templates = self._host.templates() if self._host.templates is not None else []
        loaded = {t.uid for t in templates}
        self._dirty.update(t.uid for t in templates if t.concurrency is not None or t.rate is not None)
        try:
            queued = await asyncio.to_thread(self._store.flow_templates)
        except Exception as exc:
            log.warning("flow control: cannot read the queue: %s", exc)
            return
        self._dirty.update(tid for tid in queued if tid in loaded)
        if self._tickets:
            await self._drop_ended()

    async def _drop_ended(self) -> None:
        """End here the waiting workflows whose rows ended in the store (cancelled by an operator, say)."""
        assert self._store is not None
        ended = await asyncio.to_thread(self._store.flow_ended, list(self._tickets))
        for exec_id in ended:
            ticket = self._tickets.pop(exec_id, None)
            if ticket is not None:
                log.info("[%s] cancelled while queued (the store says it ended)", exec_id)
                _drop(ticket.workflow)

    async def _step(self, template_id: str, look_due: bool) -> None:
        assert self._store is not None
        template = self._host.template(template_id) if self._host is not None and self._host.template else None
        new = self._new.pop(template_id, [])
        limits = limits_of(template) if template is not None else Limits()
        look_due = look_due or any(t.request.due is not None for t in new)
        rows = [t.row for t in new]
        try:
            result = await self._store.flow_step(template_id, limits, rows, look_due)
        except Exception as exc:
            log.error(
                "flow control: template %s: the store failed (%d trigger(s) not queued): %s", template_id, len(new), exc
            )
            for ticket in new:  # (recorded cancelled: if the rows were committed after all, they never run)
                ticket.workflow.cancel()
                if not ticket.committed.done():
                    ticket.committed.set_exception(exc)
            self._wakes[template_id] = time.time() + SWEEP
            # The step may have committed before its answer was lost: rows admitted for this engine
            # then wait for it. The next sweep looks for them.
            self._look_orphans = True
            return
        self._stored_versions.update(t.row.begin.version for t in new if t.row.begin.version is not None)
        known = set(result.known)
        for n, ticket in enumerate(new):
            uid = ticket.workflow.uid
            if n in known:
                _drop(ticket.workflow)
            else:
                self._tickets[uid] = ticket
                ticket.workflow.add_done_callback(functools.partial(self._waiting_done, ticket))
            if not ticket.committed.done():
                ticket.committed.set_result(n not in known)
        if result.wake is not None:
            self._wakes[template_id] = min(self._wakes.get(template_id, result.wake), result.wake)
        await self._launch_admitted([(exec_id, template_id) for exec_id in result.launch])

    async def _launch_orphans(self) -> None:
        """Launch this engine's admitted executions that nothing runs or waits for here.

        After a step failed, perhaps once committed: the rows it admitted for
        this engine are its unfinished executions, and nothing launched them.
        """
        assert self._store is not None
        assert self._host is not None
        owned = await asyncio.to_thread(self._store.owned)
        waiting = {t.workflow.uid for t in self._ready}
        orphans = [
            (i.exec_id, i.template_id or "")
            for i in owned
            if self._host.find(i.exec_id) is None and i.exec_id not in waiting
        ]
        if orphans:
            log.warning("flow control: %d admitted execution(s) left by a failed step: started now", len(orphans))
            await self._launch_admitted(orphans)

    async def _take_launches(self) -> None:
        """Launch this engine's rows that other engines admitted."""
        assert self._store is not None
        admitted = await self._store.flow_launches()
        if admitted:
            await self._launch_admitted(admitted)

    async def _launch_admitted(self, admitted: list[tuple[str, str]]) -> None:
        """Launch admitted rows (execution id, template id): those waiting here, and those of an earlier run."""
        orphans: dict[str, list[str]] = {}
        for exec_id, template_id in admitted:
            waiting = self._tickets.pop(exec_id) if exec_id in self._tickets else None
            if waiting is None:  # queued before a restart of this engine: resumed from the store
                orphans.setdefault(template_id, []).append(exec_id)
            elif waiting.workflow.done():
                self._cancelled_after_admission(exec_id)
            else:
                self._ready.append(waiting)
        self._launch_ready()
        resume = self._host.resume if self._host is not None else None
        for template_id, exec_ids in orphans.items():
            if resume is not None and not self._closed:
                await resume(template_id, exec_ids)

    def _cancelled_after_admission(self, exec_id: str) -> None:
        store = self._store
        assert store is not None
        asyncio.get_running_loop().run_in_executor(None, store.mark_cancelled, [exec_id])

    def _launch_ready(self) -> None:
        ready = self._ready
        while ready and not self._closed and (self.max_running is None or self._running < self.max_running):
            ticket = ready.popleft()
            if ticket.workflow.done():
                self._cancelled_after_admission(ticket.workflow.uid)
                continue
            ticket.started = True
            if self._host is not None and self._host.begun is not None and ticket.row.begin.event is not None:
                self._host.begun(ticket.workflow.uid)  # its row holds its begin: the journal need not write it
            self._launch(ticket.workflow, ticket.event, ticket.timeout, ticket.request)

    def _waiting_done(self, ticket: _Ticket, _: object) -> None:
        """A waiting workflow was cancelled here: cancel its row (unless the engine stops: it stays queued)."""
        if ticket.started or self._closed:
            return
        if ticket.workflow.uid in self._tickets:
            del self._tickets[ticket.workflow.uid]
            self._cancelled.append(ticket.workflow.uid)
            self._wake(ticket.request.template_id)


def _drop(workflow: Workflow) -> None:
    """End a workflow that never ran without recording it (its row, if any, is another's or stays queued)."""
    workflow.recorder = NULL_RECORDER
    workflow.cancel()


def _delayed(ticket: _Ticket, now: float) -> bool:
    return ticket.request.due is not None and ticket.request.due > now


def _describe(ticket: _Ticket, position: int | None) -> QueuedExecution:
    return describe(ticket.workflow, ticket.request, ticket.queued_at, position)
