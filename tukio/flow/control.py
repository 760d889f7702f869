"""`FlowControl`: the interface between the engine and whatever admits its executions.

The engine asks a `FlowControl` to admit every execution of a template with
limits (and every trigger with a key, a priority or a delay). `LocalFlow`
(`tukio.flow.local`) implements it in memory, for one process. An
implementation backed by a shared store (slots, queue and keys in
PostgreSQL or SQLite, shared by every engine) is meant to replace it without
changing the engine: it implements the same methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from tukio.errors import FlowError

if TYPE_CHECKING:
    from tukio.event import Event
    from tukio.flow.clock import Clock
    from tukio.store.base import Store
    from tukio.workflow.template import WorkflowTemplate
    from tukio.workflow.workflow import Workflow

__all__ = ["QUEUED", "FlowControl", "FlowError", "FlowHost", "FlowRequest", "QueuedExecution"]

#: The state of an execution waiting for its turn (or for its `not_before`).
QUEUED = "queued"


@dataclass(frozen=True)
class FlowRequest:
    """How one trigger asks to be admitted (made by `FlowControl.request`).

    `partition` is the value of the template's ``concurrency_key`` in the
    data (None without one); `due` the time (seconds since the epoch) it may
    start at, None for now.
    """

    template_id: str
    key: str | None = None
    priority: int = 0
    due: float | None = None
    partition: Hashable = None


@dataclass(frozen=True)
class QueuedExecution:
    """An execution waiting to start, as `Engine.queued` lists it.

    `position` is its place in its template's queue (1 starts next; an
    estimate when several ``concurrency_key`` values take turns), None while
    it waits for its `not_before`. `partition` is its ``concurrency_key``
    value; `key` its idempotency key.
    """

    exec_id: str
    template_id: str
    state: str
    position: int | None
    priority: int
    key: str | None
    partition: Any
    not_before: datetime | None
    queued_at: datetime
    workflow: Workflow


@dataclass(frozen=True)
class FlowHost:
    """What a `FlowControl` needs from its engine (the engine makes it).

    `launch(workflow, event, timeout)` starts an admitted workflow now;
    `find(exec_id)` returns the workflow running in the engine under that id,
    or None; `store` is the engine's store, or None. For a flow in a shared
    store: `template(id)` and `templates()` give the loaded templates;
    `resume(template_id, exec_ids)` runs executions of this engine admitted
    from the store's queue that it holds no workflow for (queued before a
    restart); `after_commit(callback)` calls back once what the engine
    recorded so far is committed; `begun(exec_id)` tells the engine the
    begin record of an execution about to launch is committed already.
    """

    launch: Callable[[Workflow, Event, float | None], None]
    find: Callable[[str], Workflow | None]
    store: Store | None = None
    template: Callable[[str], WorkflowTemplate | None] | None = None
    templates: Callable[[], Iterable[WorkflowTemplate]] | None = None
    resume: Callable[[str, list[str]], Awaitable[object]] | None = None
    after_commit: Callable[[Callable[[], None]], None] | None = None
    begun: Callable[[str], None] | None = None


class FlowControl(Protocol):
    """Admits the executions of an engine: limits, queue, rates, keys and delays."""

    @property
    def clock(self) -> Clock:
        """The clock of delays, rates, retention and schedules."""

    def attach(self, host: FlowHost) -> None:
        """Bind to the engine that asks (once, when the engine is made)."""

    def governs(self, template: WorkflowTemplate) -> bool:
        """True when executions of `template` must go through `submit` even without a request."""

    def request(
        self,
        template: WorkflowTemplate,
        data: Any,
        key: str | None = None,
        priority: int | None = None,
        not_before: datetime | float | None = None,
    ) -> FlowRequest:
        """Check a trigger's arguments against `template` before anything starts.

        Raises:
            FlowError: the data lacks the template's ``concurrency_key``, or
                an argument is invalid.
        """

    async def known(self, request: FlowRequest) -> Workflow | str | None:
        """The execution a request's idempotency key already names.

        Returns:
            The workflow; its id when the execution is known only from the
            store (it is not in this process); None when the key is new.
        """

    async def submit(
        self, workflow: Workflow, event: Event, timeout: float | None, request: FlowRequest
    ) -> Workflow | None:
        """Start `workflow` now (through `FlowHost.launch`) or queue it; return it either way.

        None: its key names an execution a shared store holds that does not run in this engine.
        """

    def ended(self, workflow: Workflow) -> None:
        """A workflow launched through `FlowHost.launch` ended (the engine tells, at once, in any end)."""

    def queued(self, template_id: str | None = None) -> list[QueuedExecution]:
        """The executions waiting to start (of one template, or all), in order."""

    def close(self) -> None:
        """The engine stops: cancel every execution that waits, start nothing more."""
