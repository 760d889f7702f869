"""`Scheduler`: fires templates at the ticks of their cron schedules.

Each schedule holds one timer on the flow's clock, set for its next tick.
A tick fires the template through `Engine.trigger` with the idempotency key
``schedule:<tick in UTC, ISO 8601>``: the execution id comes from the
template and the tick, so a tick fires at most once in a process and, with a
store, at most once across restarts (the store holds the execution of every
tick that fired). The trigger data is the schedule's `data` with the tick
added as ``"tick"``.

Ticks missed while no engine ran (found from the store on start) or while
the process was stalled (the clock jumped past several ticks) follow the
schedule's catch-up rule: ``none`` fires none of them, ``last`` the latest,
``all`` each one in order (at most `MAX_CATCH_UP`, the latest ones, looking
back `LOOKBACK` seconds at most). Without a store nothing is known of the
ticks before the engine started: it catches nothing up.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from tukio.flow.clock import Clock, Timer
from tukio.flow.cron import CronExpression
from tukio.flow.keys import key_exec_id
from tukio.flow.limits import CATCH_UP, ScheduleSpec, describe_value, load_zone

__all__ = ["LOOKBACK", "MAX_CATCH_UP", "Schedule", "Scheduler", "tick_key"]

log = logging.getLogger(__name__)

#: How far back (seconds) a schedule looks for missed ticks on start (a week).
LOOKBACK = 7 * 86_400.0
#: At most this many missed ticks fire on catch-up "all" (the latest ones).
MAX_CATCH_UP = 1000
# A timer this late (seconds) means the process stalled: the ticks it missed follow the catch-up rule.
_LATE = 1.0

Fire = Callable[[str, dict[str, Any], str], Awaitable[object]]
Fired = Callable[[str], Awaitable[set[str]]]


def tick_key(tick: datetime) -> str:
    """The idempotency key a schedule fires `tick` with."""
    return f"schedule:{tick.astimezone(timezone.utc).isoformat()}"


@dataclass(eq=False)
class Schedule:
    """One template's schedule, as `Engine.schedules` lists it."""

    template_id: str
    cron: CronExpression
    zone: ZoneInfo
    catch_up: str = "none"
    data: dict[str, Any] = field(default_factory=dict)
    paused: bool = False
    next_tick: datetime | None = None
    last_tick: datetime | None = None
    spec: ScheduleSpec | None = None

    @classmethod
    def from_spec(cls, template_id: str, spec: ScheduleSpec) -> Schedule:
        """Build a schedule from its JSON object.

        Raises:
            CronError: the cron expression does not parse.
            ValueError: unknown time zone or catch-up rule.
        """
        catch_up = spec.get("catch_up", "none")
        if catch_up not in CATCH_UP:
            raise ValueError(f"catch_up must be one of {', '.join(CATCH_UP)}, got {describe_value(catch_up)}")
        return cls(
            template_id,
            CronExpression.parse(spec["cron"]),
            load_zone(spec.get("timezone", "UTC")),
            catch_up,
            dict(spec.get("data") or {}),
            spec=spec,
        )

    def select(self, missed: list[datetime]) -> list[datetime]:
        """The missed ticks that fire under the catch-up rule."""
        if not missed or self.catch_up == "none":
            return []
        return missed[-1:] if self.catch_up == "last" else missed[-MAX_CATCH_UP:]


class Scheduler:
    """The schedules of one engine, each with a timer on `clock`.

    Args:
        clock: the clock the ticks are timed on.
        fire: ``fire(template_id, data, key)`` triggers one tick.
        fired: ``fired(template_id)`` returns the ids of the template's
            executions in the store (None without a store: no catch-up on start).
    """

    def __init__(self, clock: Clock, fire: Fire, fired: Fired | None = None) -> None:
        self._clock = clock
        self._fire = fire
        self._fired = fired
        self._schedules: dict[str, Schedule] = {}
        self._timers: dict[Schedule, Timer] = {}
        # The last firing of each schedule not triggered yet: the next one waits for it.
        self._firing: dict[Schedule, asyncio.Task[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def schedules(self) -> list[Schedule]:
        """Every schedule, in the order they were set."""
        return list(self._schedules.values())

    def get(self, template_id: str) -> Schedule | None:
        """The schedule of that template, or None."""
        return self._schedules.get(template_id)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.time(), timezone.utc)

    def assign(self, template_id: str, spec: ScheduleSpec | None) -> Schedule | None:
        """Give `template_id` the schedule `spec` (None: no schedule); an unchanged one is kept as it is.

        Raises:
            CronError: the cron expression does not parse.
            ValueError: unknown time zone or catch-up rule.
        """
        current = self._schedules.get(template_id)
        if current is not None and spec == current.spec:
            return current
        new = Schedule.from_spec(template_id, spec) if spec is not None else None
        if current is not None:
            self._disarm(current)
            del self._schedules[template_id]
        if new is None or self._closed:
            return None
        self._schedules[template_id] = new
        if new.catch_up == "none" or self._fired is None:
            self._arm(new, self._now())
        else:
            self._spawn(self._catch_up(new))
        return new

    def pause(self, template_id: str) -> None:
        """Stop firing the schedule of `template_id` (the ticks until `resume` are skipped).

        Raises:
            KeyError: the template has no schedule.
        """
        schedule = self._schedules[template_id]
        schedule.paused = True
        self._disarm(schedule)

    def resume(self, template_id: str) -> None:
        """Fire the schedule of `template_id` again, from its next tick.

        Raises:
            KeyError: the template has no schedule.
        """
        schedule = self._schedules[template_id]
        if schedule.paused:
            schedule.paused = False
            if not self._closed:
                self._arm(schedule, self._now())

    def close(self) -> None:
        """Fire nothing more (the engine stops)."""
        self._closed = True
        for schedule in self._schedules.values():
            self._disarm(schedule)

    # -- timers ------------------------------------------------------------------------
    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _disarm(self, schedule: Schedule) -> None:
        timer = self._timers.pop(schedule, None)
        if timer is not None:
            timer.cancel()
        schedule.next_tick = None

    def _arm(self, schedule: Schedule, after: datetime) -> None:
        self._disarm(schedule)
        tick = schedule.cron.next_after(after, schedule.zone)
        schedule.next_tick = tick
        self._timers[schedule] = self._clock.call_at(tick.timestamp(), functools.partial(self._tick, schedule, tick))

    def _tick(self, schedule: Schedule, tick: datetime) -> None:
        self._timers.pop(schedule, None)
        if self._closed or schedule.paused or self._schedules.get(schedule.template_id) is not schedule:
            return
        self._trigger(schedule, tick)
        now = self._now()
        missed = schedule.cron.ticks_between(tick, now, schedule.zone)
        if missed and (now - missed[0]).total_seconds() > _LATE:  # stalled past later ticks
            for late in schedule.select(missed):
                self._trigger(schedule, late)
            tick = now
        self._arm(schedule, tick)

    def _trigger(self, schedule: Schedule, tick: datetime) -> None:
        """Fire `tick` once the schedule's previous firing was triggered: ticks start in their order."""
        schedule.last_tick = tick
        data = {**schedule.data, "tick": tick.astimezone(timezone.utc).isoformat()}
        previous = self._firing.get(schedule)
        task = self._spawn(self._fire_logged(previous, schedule.template_id, data, tick_key(tick)))
        self._firing[schedule] = task
        task.add_done_callback(functools.partial(self._fired_one, schedule))

    def _fired_one(self, schedule: Schedule, task: asyncio.Task[Any]) -> None:
        if self._firing.get(schedule) is task:
            del self._firing[schedule]

    async def _fire_logged(
        self, previous: asyncio.Task[Any] | None, template_id: str, data: dict[str, Any], key: str
    ) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])  # a trigger may wait for the store: keep the ticks in order
        try:
            await self._fire(template_id, data, key)
        except Exception:
            log.exception("schedule of %s: %s did not fire", template_id, key)

    async def _catch_up(self, schedule: Schedule) -> None:
        """Fire the ticks missed since the last one the store holds (as the rule says), then arm the timer."""
        assert self._fired is not None
        now = self._now()
        try:
            fired = await self._fired(schedule.template_id)
        except Exception:
            log.exception("schedule of %s: cannot read the store, no catch-up", schedule.template_id)
            fired = set()
        missed = await asyncio.to_thread(self._missed, schedule, now, fired) if fired else []
        if self._closed or schedule.paused or self._schedules.get(schedule.template_id) is not schedule:
            return
        for tick in schedule.select(missed):
            self._trigger(schedule, tick)
        self._arm(schedule, now)

    @staticmethod
    def _missed(schedule: Schedule, now: datetime, fired: set[str]) -> list[datetime]:
        """The ticks after the last one that fired (within `LOOKBACK`); none if none fired.

        It looks back an hour, then twice as far each time nothing fired in
        the window, so that a schedule that fired recently costs little.
        """
        span = 3600.0
        while True:
            span = min(span, LOOKBACK)
            start = datetime.fromtimestamp(now.timestamp() - span, timezone.utc)
            ticks = schedule.cron.ticks_between(start, now, schedule.zone)
            for i in range(len(ticks) - 1, -1, -1):
                if key_exec_id(schedule.template_id, tick_key(ticks[i])) in fired:
                    return ticks[i + 1 :]
            if span >= LOOKBACK:
                return []
            span *= 2
