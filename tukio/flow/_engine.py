"""The flow-control and schedule methods of `Engine` (a mixin: the engine holds the state).

The engine admits executions through its `FlowControl` (`trigger`,
`data_received` and the end of each workflow call it); the methods here
set the flow and the scheduler up and give access to them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from tukio.errors import Problem, template_error
from tukio.flow.control import FlowControl, FlowHost, QueuedExecution
from tukio.flow.limits import ScheduleSpec, check_flow
from tukio.flow.local import LocalFlow
from tukio.flow.schedule import Schedule, Scheduler
from tukio.flow.shared import SharedFlow
from tukio.store._flowsql import FlowStore

if TYPE_CHECKING:
    from datetime import datetime

    from tukio.event import Event
    from tukio.selector import WorkflowSelector
    from tukio.store.base import Store
    from tukio.workflow.workflow import Workflow

__all__ = ["EngineFlow"]

log = logging.getLogger(__name__)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("schedule pause not recorded in the store: %s", task.exception())


class EngineFlow:
    """Flow control and schedules of an `Engine` (see `tukio.flow` and the flow-control guide)."""

    _flow: FlowControl
    _schedules: Scheduler
    _stopping: bool
    selector: WorkflowSelector

    if TYPE_CHECKING:

        @property
        def store(self) -> Store | None: ...

        async def trigger(
            self,
            template_id: str,
            data: dict[str, Any] | Event,
            timeout: float | None = None,
            *,
            key: str | None = None,
            priority: int | None = None,
            not_before: datetime | float | None = None,
        ) -> Workflow | None: ...

    def _init_flow(
        self, flow: FlowControl | None, max_running: int | None, host: FlowHost, *, shared: bool = False
    ) -> None:
        """Set the flow control up and the scheduler on its clock.

        Without a `flow`: a `SharedFlow` when the store is `shared` by
        engines (the limits, queue and keys are the cluster's), else a
        `LocalFlow`.

        Raises:
            ValueError: both `flow` and `max_running` are given, or
                `max_running` is not a positive integer.
        """
        if flow is None:
            flow = SharedFlow(max_running=max_running) if shared else LocalFlow(max_running=max_running)
        elif max_running is not None:
            raise ValueError("give max_running to the flow control, not to the engine, when you give both")
        self._flow = flow
        flow.attach(host)
        fired = self._fired_in_store if host.store is not None else None
        self._schedules = Scheduler(flow.clock, self._fire_schedule, fired)

    @property
    def flow(self) -> FlowControl:
        """What admits this engine's executions under the templates' limits."""
        return self._flow

    def queued(self, template_id: str | None = None) -> list[QueuedExecution]:
        """The executions waiting to start (state 'queued'), with their position.

        Args:
            template_id: only those of this template (None: all).

        Returns:
            Per template, those in line first (position 1 starts next), then
            those waiting for their `not_before` (position None).
        """
        return self._flow.queued(template_id)

    @property
    def schedules(self) -> list[Schedule]:
        """The schedules of the loaded templates, with their next and last ticks."""
        return self._schedules.schedules

    async def schedule(
        self,
        template_id: str,
        cron: str,
        *,
        timezone: str = "UTC",
        catch_up: str = "none",
        data: dict[str, Any] | None = None,
    ) -> Schedule:
        """Give the loaded template `template_id` a schedule (replacing its ``"schedule"``).

        Args:
            template_id: the id of a loaded template.
            cron: a five-field cron expression or an ``@alias``.
            timezone: the IANA time zone of the cron times.
            catch_up: which ticks missed while no engine ran fire on start:
                "none", "last" or "all".
            data: the trigger data of each tick (the tick is added as ``"tick"``).

        Returns:
            The schedule.

        Raises:
            KeyError: no template has that id.
            TemplateError: the schedule is invalid (naming each problem).
        """
        template = self.selector.get(template_id)
        if template is None:
            raise KeyError(template_id)
        spec: ScheduleSpec = {"cron": cron, "timezone": timezone, "catch_up": catch_up}
        if data is not None:
            spec["data"] = data
        problems = check_flow({"schedule": spec})
        if problems:
            raise template_error(Problem(where, message, ValueError) for where, message in problems)
        template.schedule = spec
        self._sync_schedules()
        schedule = self._schedules.get(template_id)
        assert schedule is not None
        return schedule

    def pause_schedule(self, template_id: str) -> asyncio.Future[None]:
        """Stop firing the schedule of `template_id` (ticks until `resume_schedule` are skipped).

        With a store several engines share, the pause holds for all of them
        (it is kept in the store: an engine that starts later sees it too).

        Returns:
            What is done once the pause is recorded in the store (at once
            without one); awaiting it is optional.

        Raises:
            KeyError: the template has no schedule.
        """
        self._schedules.pause(template_id)
        return self._record_pause(template_id, True)

    def resume_schedule(self, template_id: str) -> asyncio.Future[None]:
        """Fire the schedule of `template_id` again, from its next tick (on every engine of a shared store).

        Returns:
            What is done once the resumption is recorded in the store (at
            once without one); awaiting it is optional.

        Raises:
            KeyError: the template has no schedule.
        """
        self._schedules.resume(template_id)
        return self._record_pause(template_id, False)

    def _record_pause(self, template_id: str, paused: bool) -> asyncio.Future[None]:
        store: object = self.store
        if not isinstance(store, FlowStore):
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        task = asyncio.ensure_future(store.pause_schedule(template_id, paused))
        task.add_done_callback(_log_failure)
        return task

    def _sync_schedules(self) -> None:
        if self._stopping:
            return
        wanted = {t.uid: t.schedule for t in self.selector.templates}
        for schedule in self._schedules.schedules:
            if schedule.template_id not in wanted:
                self._schedules.assign(schedule.template_id, None)
        for template_id, spec in wanted.items():
            self._schedules.assign(template_id, spec)

    async def _fire_schedule(self, template_id: str, data: dict[str, Any], key: str) -> None:
        store: object = self.store
        if isinstance(store, FlowStore) and await store.schedule_paused(template_id):
            log.info("schedule of %s: paused in the store, %s not fired", template_id, key)
            return
        await self.trigger(template_id, data, key=key)

    async def _fired_in_store(self, template_id: str) -> set[str]:
        store = self.store
        assert store is not None
        infos = await asyncio.to_thread(store.executions, template_id=template_id)
        return {info.exec_id for info in infos}
