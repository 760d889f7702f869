"""`LocalFlow`: flow control in memory, for the engines of one process.

It holds, per template, a `FairQueue` (the concurrency slots and the
waiting triggers) and a `SlidingWindow` (the rate), the delayed triggers
with their timers, the engine-wide `max_running` count and the
`KeyRegistry` of idempotency keys. Nothing of it is shared with other
processes: with a store shared by several engines, each engine applies the
limits to its own executions only (see the flow-control guide).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from tukio.flow.clock import Clock, SystemClock, Timer
from tukio.flow.control import QUEUED, FlowError, FlowHost, FlowRequest, QueuedExecution
from tukio.flow.keys import DEFAULT_RETENTION, KeyRegistry, key_exec_id
from tukio.flow.limits import describe_value
from tukio.flow.queue import FairQueue
from tukio.flow.rate import SlidingWindow

if TYPE_CHECKING:
    from tukio.event import Event
    from tukio.workflow.template import WorkflowTemplate
    from tukio.workflow.workflow import Workflow

__all__ = ["LocalFlow"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Ticket:
    """One trigger waiting for its turn (or its time)."""

    workflow: Workflow
    event: Event
    timeout: float | None
    request: FlowRequest
    seq: int
    queued_at: float
    started: bool = False
    timer: Timer | None = None

    @property
    def priority(self) -> int:
        return self.request.priority

    @property
    def partition(self) -> Hashable:
        return self.request.partition

    @property
    def live(self) -> bool:
        # Not cancelled: a ticket leaves the queue (or the delayed ones) as it starts.
        return not self.workflow.done()


@dataclass(eq=False)
class _Lane:
    """The flow state of one template."""

    template_id: str
    queue: FairQueue[_Ticket]
    rate: SlidingWindow | None = None
    rate_spec: Any = None
    rate_timer: Timer | None = None
    delayed: dict[str, _Ticket] = field(default_factory=dict)


# A delay longer than this (about 317 years) is a mistake, not a plan.
_MAX_DELAY = 1e10


def _as_time(not_before: datetime | float, now: float) -> float:
    if isinstance(not_before, datetime):
        if not_before.tzinfo is None or not_before.utcoffset() is None:
            raise FlowError("not_before must be an aware datetime (or a delay in seconds), got a naive one")
        return not_before.timestamp()
    if isinstance(not_before, bool) or not isinstance(not_before, (int, float)) or not 0 <= not_before <= _MAX_DELAY:
        raise FlowError(
            f"not_before must be an aware datetime or a delay of 0 to {_MAX_DELAY:.0f} seconds,"
            f" got {describe_value(not_before)}"
        )
    return now + not_before


def _utc(when: float) -> datetime:
    return datetime.fromtimestamp(when, timezone.utc)


def describe(workflow: Workflow, request: FlowRequest, queued_at: float, position: int | None) -> QueuedExecution:
    """A waiting execution as `Engine.queued` lists it (`queued_at`: seconds since the epoch)."""
    return QueuedExecution(
        exec_id=workflow.uid,
        template_id=request.template_id,
        state=QUEUED,
        position=position,
        priority=request.priority,
        key=request.key,
        partition=request.partition,
        not_before=_utc(request.due) if request.due is not None else None,
        queued_at=_utc(queued_at),
        workflow=workflow,
    )


class LocalFlow:
    """Flow control in memory, for one engine (see `tukio.flow.control.FlowControl`).

    Args:
        max_running: at most this many executions of the engine run at once,
            whatever their template (None: no such limit); the others wait,
            templates taking turns.
        clock: the clock of delays, rates, retention and schedules (the
            wall clock when None; a `VirtualClock` in tests).
        key_retention: seconds an ended execution stays known by its
            idempotency key in memory (a day by default).

    Raises:
        ValueError: `max_running` is not a positive integer, or
            `key_retention` is negative.
    """

    def __init__(
        self, *, max_running: int | None = None, clock: Clock | None = None, key_retention: float = DEFAULT_RETENTION
    ) -> None:
        if max_running is not None and (
            isinstance(max_running, bool) or not isinstance(max_running, int) or max_running < 1
        ):
            raise ValueError(f"max_running must be a positive integer, got {describe_value(max_running)}")
        self.max_running = max_running
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._keys = KeyRegistry(key_retention)
        self._host: FlowHost | None = None
        self._lanes: dict[str, _Lane] = {}
        # Lanes that may start a ticket, in the order they take turns.
        self._pending: dict[str, _Lane] = {}
        self._running = 0
        self._plain: dict[str, FlowRequest] = {}
        # What the workflows launched and not ended asked for (keyed by the object: no id to read).
        self._held: dict[Workflow, FlowRequest] = {}
        self._seq = itertools.count()
        self._closed = False

    @property
    def clock(self) -> Clock:
        """The clock of delays, rates, retention and schedules."""
        return self._clock

    @property
    def running(self) -> int:
        """How many executions admitted by this flow run now."""
        return self._running

    def attach(self, host: FlowHost) -> None:
        """Bind to the engine (see `FlowControl.attach`).

        Raises:
            RuntimeError: it is already attached to an engine.
        """
        if self._host is not None and self._host is not host:
            raise RuntimeError("this LocalFlow already serves another engine")
        self._host = host

    def governs(self, template: WorkflowTemplate) -> bool:
        """True when `template` has a concurrency or rate limit, or `max_running` is set."""
        return self.max_running is not None or template.concurrency is not None or template.rate is not None

    # -- admission ---------------------------------------------------------------
    def request(
        self,
        template: WorkflowTemplate,
        data: Any,
        key: str | None = None,
        priority: int | None = None,
        not_before: datetime | float | None = None,
    ) -> FlowRequest:
        """Check a trigger's arguments (see `FlowControl.request`).

        Raises:
            FlowError: the data lacks the template's ``concurrency_key``; `key`
                is not a non-empty string; `priority` is not an integer;
                `not_before` is neither an aware datetime nor a delay >= 0.
        """
        if key is not None and (not isinstance(key, str) or not key):
            raise FlowError(f"key must be a non-empty string, got {describe_value(key)}")
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise FlowError(f"priority must be an integer, got {describe_value(priority)}")
        due = None if not_before is None else _as_time(not_before, self._clock.time())
        partition: Hashable = None
        field_name = template.concurrency_key
        if field_name is not None and template.concurrency is not None:
            payload = getattr(data, "data", data)
            if not isinstance(payload, dict) or field_name not in payload:
                raise FlowError(
                    f"template {template.uid}: the trigger data has no {field_name!r} (its concurrency_key)"
                )
            partition = payload[field_name]
            if not isinstance(partition, Hashable):
                raise FlowError(
                    f"template {template.uid}: the value of {field_name!r} (its concurrency_key) "
                    f"must be hashable, got {type(partition).__name__}"
                )
        if key is None and priority is None and due is None and partition is None:
            plain = self._plain.get(template.uid)  # the common request: made once per template
            if plain is None:
                plain = self._plain[template.uid] = FlowRequest(template.uid)
            return plain
        return FlowRequest(template.uid, key, priority or 0, due, partition)

    async def known(self, request: FlowRequest) -> Workflow | str | None:
        """The execution `request.key` already names (see `FlowControl.known`)."""
        if request.key is None:
            return None
        exec_id = key_exec_id(request.template_id, request.key)
        workflow = self._keys.get(exec_id, self._clock.time())
        host = self._host
        if workflow is None and host is not None:
            workflow = host.find(exec_id)
        if workflow is not None or host is None or host.store is None:
            return workflow
        try:
            await asyncio.to_thread(host.store.load, exec_id)
        except KeyError:
            return None
        except Exception as exc:  # damaged or half-written: it exists all the same
            log.warning("[%s] key %r: the store holds this execution but cannot load it: %s", exec_id, request.key, exc)
        return exec_id

    async def submit(
        self, workflow: Workflow, event: Event, timeout: float | None, request: FlowRequest
    ) -> Workflow | None:
        """Start `workflow` now, or queue it until its turn and its time (see `FlowControl.submit`).

        A queued workflow has not started: cancel it to take it out of the
        queue (it ends 'cancelled').
        """
        if request.key is not None:
            workflow.uid = key_exec_id(request.template_id, request.key)
            self._keys.add(workflow)
        lane = self._lane(workflow.template)
        if self._closed:
            workflow.cancel()
            return workflow
        due = request.due
        if due is None and self._take_slot(lane, request):  # the limit is not reached: no ticket, no timer
            self._launch(workflow, event, timeout, request)
            return workflow
        now = self._clock.time()
        ticket = _Ticket(workflow, event, timeout, request, next(self._seq), now)
        # Told if the workflow is cancelled while it waits.
        workflow.add_done_callback(functools.partial(self._done, ticket))
        if due is not None and due > now:
            lane.delayed[workflow.uid] = ticket
            ticket.timer = self._clock.call_at(due, functools.partial(self._due, lane, ticket))
        else:
            self._enqueue(lane, ticket)
        return workflow

    def _lane(self, template: WorkflowTemplate) -> _Lane:
        """The lane of `template`, its limits brought up to date (a reloaded template may change them)."""
        lane = self._lanes.get(template.uid)
        if lane is None:
            lane = self._lanes[template.uid] = _Lane(template.uid, FairQueue(template.concurrency))
        elif template.concurrency != lane.queue.limit:
            lane.queue.set_limit(template.concurrency)
        if template.rate != lane.rate_spec:
            lane.rate_spec = template.rate
            lane.rate = SlidingWindow.from_spec(template.rate) if template.rate is not None else None
        return lane

    def _global_free(self) -> bool:
        return self.max_running is None or self._running < self.max_running

    def _take_slot(self, lane: _Lane, request: FlowRequest) -> bool:
        """Take a slot now if the limits allow and nobody waits ahead; True if taken."""
        rate = lane.rate
        if self.max_running is None and rate is None:  # the usual case: one check of the template's slots
            return lane.queue.start_now(request.partition)
        if self.max_running is not None and (self._running >= self.max_running or self._pending):
            return False
        if rate is None:
            return lane.queue.start_now(request.partition)
        now = self._clock.time()
        if rate.wait(now) > 0.0 or not lane.queue.start_now(request.partition):
            return False
        rate.take(now)
        return True

    def _enqueue(self, lane: _Lane, ticket: _Ticket) -> None:
        lane.queue.push(ticket)
        self._pending.setdefault(lane.template_id, lane)
        self._drain()

    def _due(self, lane: _Lane, ticket: _Ticket) -> None:
        lane.delayed.pop(ticket.workflow.uid, None)
        ticket.timer = None
        if not ticket.live or self._closed:
            return
        if self._take_slot(lane, ticket.request):
            self._launch_ticket(ticket)
        else:
            self._enqueue(lane, ticket)

    def _launch(self, workflow: Workflow, event: Event, timeout: float | None, request: FlowRequest) -> None:
        assert self._host is not None, "LocalFlow.attach() was not called"
        self._running += 1
        self._held[workflow] = request
        self._host.launch(workflow, event, timeout)

    def _launch_ticket(self, ticket: _Ticket) -> None:
        ticket.started = True
        self._launch(ticket.workflow, ticket.event, ticket.timeout, ticket.request)

    def _start_one(self, lane: _Lane) -> bool:
        """Start the next ticket of `lane` if its slots and rate allow; True if one started."""
        queue = lane.queue
        rate = lane.rate
        if rate is not None:
            if not queue.can_pop():
                return False
            now = self._clock.time()
            wait = rate.wait(now)
            if wait > 0.0:
                if lane.rate_timer is None:
                    lane.rate_timer = self._clock.call_at(now + wait, functools.partial(self._rate_free, lane))
                return False
            rate.take(now)
        ticket = queue.pop()
        if ticket is None:
            return False
        self._launch_ticket(ticket)
        return True

    def _drain(self) -> None:
        """Start what may start, the pending lanes taking turns."""
        pending = self._pending
        while pending and self._global_free() and not self._closed:
            template_id = next(iter(pending))
            lane = pending.pop(template_id)
            if self._start_one(lane) and lane.queue.can_pop():
                pending[template_id] = lane  # at the end: the next lane's turn

    def _rate_free(self, lane: _Lane) -> None:
        lane.rate_timer = None
        if lane.queue.can_pop():
            self._pending.setdefault(lane.template_id, lane)
            self._drain()

    def ended(self, workflow: Workflow) -> None:
        """A workflow this flow launched ended, in any way: free its slot, start what may start."""
        request = self._held.pop(workflow, None)
        if request is None:
            return
        if request.key is not None:
            self._keys.ended(workflow, self._clock.time())
        self._running -= 1
        lane = self._lanes[request.template_id]
        if lane.queue.release(request.partition):
            self._pending.setdefault(lane.template_id, lane)
        if self._pending:  # this lane's next, or, under max_running, another lane's
            self._drain()

    def _done(self, ticket: _Ticket, workflow: asyncio.Future[Any]) -> None:
        """The workflow of a ticket that waited ended: if it never started, take it out of the line."""
        if ticket.started:
            return  # its end went through `ended`
        if ticket.request.key is not None:
            self._keys.ended(ticket.workflow, self._clock.time())
        lane = self._lanes[ticket.request.template_id]
        if ticket.timer is not None:  # cancelled while delayed
            ticket.timer.cancel()
            lane.delayed.pop(ticket.workflow.uid, None)
        else:  # cancelled while queued
            lane.queue.refresh(ticket.partition)

    # -- looking --------------------------------------------------------------------
    def queued(self, template_id: str | None = None) -> list[QueuedExecution]:
        """The executions waiting to start, in the order they would (see `FlowControl.queued`).

        Those in line come first, by priority then arrival (keys of a
        ``concurrency_key`` take turns, so their positions are an estimate),
        then those waiting for their `not_before`, soonest first.
        """
        lanes = [self._lanes[template_id]] if template_id in self._lanes else []
        if template_id is None:
            lanes = list(self._lanes.values())
        out: list[QueuedExecution] = []
        for lane in lanes:
            waiting = sorted(lane.queue.waiting(), key=lambda t: (-t.priority, t.seq))
            out.extend(self._describe(t, i) for i, t in enumerate(waiting, 1))
            delayed = sorted((t for t in lane.delayed.values() if t.live), key=lambda t: (t.request.due, t.seq))
            out.extend(self._describe(t, None) for t in delayed)
        return out

    @staticmethod
    def _describe(ticket: _Ticket, position: int | None) -> QueuedExecution:
        return describe(ticket.workflow, ticket.request, ticket.queued_at, position)

    def close(self) -> None:
        """Cancel every execution that waits; start nothing more (see `FlowControl.close`)."""
        self._closed = True
        self._pending.clear()
        for lane in self._lanes.values():
            if lane.rate_timer is not None:
                lane.rate_timer.cancel()
                lane.rate_timer = None
            for ticket in [*lane.queue.waiting(), *lane.delayed.values()]:
                ticket.workflow.cancel()
