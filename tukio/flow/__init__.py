"""Flow control: concurrency and rate limits, a priority queue, idempotency keys, delays, schedules.

The engine admits executions through a `FlowControl`; `LocalFlow` is the
in-memory one, for one process. Its parts live in their own modules:
`limits` (the template settings and their checks), `queue` (the fair
priority queue), `rate` (the sliding window), `keys` (idempotency keys),
`clock` (wall and virtual clocks), `cron` (cron expressions) and
`schedule` (the timers that fire schedules).
"""

from tukio.flow.clock import Clock, SystemClock, VirtualClock
from tukio.flow.control import QUEUED, FlowControl, FlowError, FlowHost, FlowRequest, QueuedExecution
from tukio.flow.cron import CronError, CronExpression
from tukio.flow.keys import DEFAULT_RETENTION, key_exec_id
from tukio.flow.limits import RateSpec, ScheduleSpec
from tukio.flow.local import LocalFlow
from tukio.flow.schedule import Schedule, Scheduler

__all__ = [
    "DEFAULT_RETENTION",
    "QUEUED",
    "Clock",
    "CronError",
    "CronExpression",
    "FlowControl",
    "FlowError",
    "FlowHost",
    "FlowRequest",
    "LocalFlow",
    "QueuedExecution",
    "RateSpec",
    "Schedule",
    "ScheduleSpec",
    "Scheduler",
    "SystemClock",
    "VirtualClock",
    "key_exec_id",
]
