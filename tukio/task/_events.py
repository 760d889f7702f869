"""How a running task receives an event: journaled first when its workflow is durable.

A task of a workflow whose recorder journals events (`Recorder.task_event`)
gets each event in its queue only once the event is recorded, in the order
the events came, so that a re-run after a crash gets the same events in the
same order before any new one. Execution events (on the `EXEC_TOPIC`
topics) are not journaled: they are delivered at once.
"""

from __future__ import annotations

import logging
import weakref
from collections import deque
from collections.abc import Collection
from typing import TYPE_CHECKING

from tukio._report import describe_error
from tukio.broker import EXEC_TOPIC

if TYPE_CHECKING:
    from tukio.event import Event
    from tukio.recorder import Written
    from tukio.task.task import TukioTask

__all__ = ["Gate", "admit", "gates", "receive"]

log = logging.getLogger(__name__)

#: The events of each task that wait for their record, oldest first.
_held: weakref.WeakKeyDictionary[TukioTask, deque[tuple[Event, Written]]] = weakref.WeakKeyDictionary()
#: Tasks failing because an event could not be recorded: they get no event any more.
_failed: weakref.WeakSet[TukioTask] = weakref.WeakSet()


class Gate:
    """A task that catches up (see `tukio.store._catchup`): the ids of the events it got, and the new ones held."""

    __slots__ = ("held", "seen")

    def __init__(self, seen: Collection[int]) -> None:
        self.seen = set(seen)
        self.held: list[Event] | None = []


#: The resumed listening tasks catching up (a task ends, its gate goes); empty almost always.
gates: weakref.WeakKeyDictionary[TukioTask, Gate] = weakref.WeakKeyDictionary()


def admit(task: TukioTask, event: Event) -> bool:
    """False when `task` must not get `event` now: a copy it got already, or held until it caught up."""
    gate = gates.get(task)
    if gate is None:
        return True
    event_id = event._id
    if event_id is not None and event_id in gate.seen:
        return False
    if gate.held is not None:
        gate.held.append(event)
        return False
    if event_id is not None:
        gate.seen.add(event_id)
    return True


def receive(task: TukioTask, event: Event) -> None:
    """Put `event` in the queue of `task` once its recorder has recorded it (at once when nothing records)."""
    workflow = task.workflow
    template = task.template
    topic = event.topic
    if workflow is None or template is None or (topic is not None and topic.startswith(EXEC_TOPIC)):
        task.queue.put_nowait(event)
        return
    if gates and not admit(task, event):  # a resumed task catching up (see `tukio.store._catchup`)
        return
    written = workflow.recorder.task_event(workflow, template.uid, event)
    held = _held.get(task)
    if held is None:
        if written.done():
            _give(task, event, written.error)
            return
        held = _held[task] = deque()
        written.then(_release, task)
    held.append((event, written))


def _release(task: TukioTask, _: BaseException | None) -> None:
    """The oldest held event of `task` is recorded: hand over every recorded one, in order."""
    held = _held[task]  # (the callback holds the task: its entry cannot have gone)
    while held and held[0][1].done():
        event, written = held.popleft()
        _give(task, event, written.error)
    if held:
        held[0][1].then(_release, task)
    else:
        del _held[task]


def _give(task: TukioTask, event: Event, error: BaseException | None) -> None:
    if task.done() or (_failed and task in _failed):
        return  # ended meanwhile: as an event that comes after the end
    if error is None:
        task.queue.put_nowait(event)
        return
    # As for outputs that cannot be stored: the task fails, and its branch stops.
    workflow, template = task.workflow, task.template
    assert workflow is not None
    assert template is not None
    log.error("[%s] task %s failed: an event it received cannot be recorded", workflow.uid, template.uid)
    workflow._fail_task(template.uid, describe_error(error))
    _failed.add(task)
    task.cancel()
