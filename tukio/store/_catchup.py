"""A listening task resumed on another node: the shared events it missed, from the store, once each.

A task that listens to topics gets each event once the journal has it (see
`tukio.task._events`), and a re-run after a crash gets those again. With a
store several nodes share, the events published after the task's node died,
and before another node resumed the task, reached no task. So, when a task
starts listening, the journal keeps a mark of where the shared events stood
(a `ListenMark`, journaled as the task's first event record);
a re-run reads from the store every event after that mark the task would
have got, less those it had received, and gets them before any new one.

Events carry their id in the store (`Event._id`): a task drops a second copy
of an event it got already (from the store, then live from a node that was
late reading it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from tukio.event import Event
from tukio.task._events import Gate, gates, receive

if TYPE_CHECKING:
    from tukio.task.task import TukioTask

__all__ = ["PAGE", "ListenMark", "catch_up", "mark_payload", "read_mark"]

log = logging.getLogger(__name__)

#: The most events a store returns in one read (`LeasedStore.events_after`).
PAGE = 1000
#: The first item of a journaled mark (an event's is its data, a dict).
_MARK = "listening"


@dataclasses.dataclass(frozen=True)
class ListenMark:
    """Where the shared events stood when a task started listening: what it gets from then on.

    The task gets every event of another node whose id is above `read`
    (the events the loop's reader had dispatched so far), and every event
    of the nodes in `local` (those of its loop, dispatched there at once)
    whose id is above `published`. A task taken over by another node after
    its node died gets those it missed from the store (see
    `catch_up`).
    """

    read: int
    published: int
    local: tuple[str, ...]

    def covers(self, event_id: int, origin: str | None) -> bool:
        """True when the task was listening when the event `event_id` of node `origin` was dispatched."""
        return event_id > (self.published if origin in self.local else self.read)


#: The catching up in progress (kept from the garbage collector until done).
_running: set[asyncio.Task[None]] = set()

#: Reads the events every node published after an id: ``(id, origin, topic, data)``, `PAGE` at most.
Fetch = Callable[[int], Sequence[tuple[int, str | None, str | None, Any]]]


def mark_payload(mark: ListenMark) -> list[Any]:
    """What the journal keeps of `mark` (in a task event record)."""
    return [_MARK, mark.read, mark.published, list(mark.local)]


def read_mark(payload: Any) -> ListenMark | None:
    """The mark a journaled task event holds; None when it is an event.

    Raises:
        ValueError: it looks like a mark, but is not one the journal wrote.
    """
    if not (isinstance(payload, list) and payload and payload[0] == _MARK):
        return None
    try:
        _, read, published, local = payload
        return ListenMark(int(read), int(published), tuple(str(n) for n in local))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a listening mark that cannot be read: {payload!r}") from exc


def catch_up(task: TukioTask, mark: ListenMark, got: Collection[int], fetch: Fetch) -> None:
    """Give `task` (resumed, listening again) the shared events after `mark` it did not get.

    From now on the events it receives are held until those it missed
    (read with `fetch`, on a thread) are given, in the order of their ids;
    the ids in `got` (the events it had received) and every event id it
    gets are never given twice.
    """
    gate = gates[task] = Gate(got)
    running = task.get_loop().create_task(_catch_up(task, gate, mark, fetch), name=f"tukio-catch-up-{task.uid}")
    _running.add(running)
    running.add_done_callback(_running.discard)


async def _catch_up(task: TukioTask, gate: Gate, mark: ListenMark, fetch: Fetch) -> None:
    listening = task._listening
    everything = None in listening
    missed: list[Event] = []
    try:
        cursor = min(mark.read, mark.published)
        while True:
            rows = await asyncio.to_thread(fetch, cursor)
            for event_id, origin, topic, data in rows:
                cursor = event_id
                if event_id in gate.seen or not mark.covers(event_id, origin):
                    continue
                if everything or (topic is not None and topic in listening):
                    event = Event(data, topic=topic)
                    event._id = event_id
                    missed.append(event)
            if len(rows) < PAGE:
                break
    except Exception:
        log.exception("task %s: the events it missed could not be read; it goes on without them", task.uid)
    finally:
        held, gate.held = gate.held or [], None
        if missed:
            log.info("task %s gets %d event(s) published while it was not running", task.uid, len(missed))
        for event in (*missed, *held):
            receive(task, event)
