"""`FairQueue`: the waiting triggers of one template, by priority, FIFO, keys taking turns.

Each partition (a value of the template's ``concurrency_key``, or one
partition for all when it has none) holds its own running count and its own
heap of waiting tickets (highest priority first, then oldest first). The
next ticket to start is the head of the partition that may start one
(fewer running than its limit) whose head has the highest priority; among
those of equal priority, the partition served least recently goes first. So
a key that floods the queue takes turns with the others at equal priority:
it never makes them wait behind its backlog.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["FairQueue", "Queued"]


class Queued(Protocol):
    """What the queue holds: a ticket with a priority, an arrival number and a partition."""

    @property
    def priority(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def partition(self) -> Hashable: ...
    @property
    def live(self) -> bool: ...


T = TypeVar("T", bound=Queued)


class _Partition(Generic[T]):
    __slots__ = ("heap", "key", "running", "turn", "version")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.heap: list[tuple[int, int, T]] = []
        self.running = 0
        self.turn = 0  # when it was last served (0: never)
        self.version = 0  # bumped whenever its entry in the ready heap goes stale

    def head(self) -> T | None:
        heap = self.heap
        while heap and not heap[0][2].live:
            heapq.heappop(heap)
        return heap[0][2] if heap else None


class FairQueue(Generic[T]):
    """The queue of one template: tickets by partition, taken fairly (see the module docstring).

    Args:
        limit: how many may run at once per partition (None: no limit).
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._partitions: dict[Hashable, _Partition[T]] = {}
        # (-head priority, last served, tie, version, partition): partitions that may start one.
        self._ready: list[tuple[int, int, int, int, _Partition[T]]] = []
        self._turns = itertools.count(1)
        self._ties = itertools.count()

    def set_limit(self, limit: int | None) -> None:
        """Change the limit per partition (a reloaded template); the waiting tickets keep their place."""
        if limit != self.limit:
            self.limit = limit
            for part in self._partitions.values():
                self._offer(part, part.head())

    def _part(self, key: Hashable) -> _Partition[T]:
        part = self._partitions.get(key)
        if part is None:
            part = self._partitions[key] = _Partition(key)
        return part

    def _may_start(self, part: _Partition[T]) -> bool:
        return self.limit is None or part.running < self.limit

    def _offer(self, part: _Partition[T], head: T | None) -> None:
        """Put `part` in the ready heap under its `head` (the old entry goes stale)."""
        part.version += 1
        if head is not None and self._may_start(part):
            heapq.heappush(self._ready, (-head.priority, part.turn, next(self._ties), part.version, part))

    def start_now(self, key: Hashable) -> bool:
        """Count a start in partition `key` if it may start one and nobody waits there.

        The fast path of a trigger when the limit is not reached: True means
        the caller starts its execution at once, and must call `release` as
        it ends.
        """
        part = self._partitions.get(key)
        if part is None:
            part = self._partitions[key] = _Partition(key)
        elif part.heap and part.head() is not None:
            return False
        limit = self.limit
        if limit is not None and part.running >= limit:
            return False
        part.running += 1
        part.turn = next(self._turns)
        return True

    def push(self, ticket: T) -> None:
        """Queue `ticket` in its partition."""
        part = self._part(ticket.partition)
        heap = part.heap
        heapq.heappush(heap, (-ticket.priority, ticket.seq, ticket))
        top = heap[0][2]
        if top is ticket or not top.live:  # a new head
            self._offer(part, part.head())

    def pop(self) -> T | None:
        """Take the next ticket that may start (counted as running), or None."""
        ready = self._ready
        while ready:
            _, _, _, version, part = heapq.heappop(ready)
            if version != part.version or not self._may_start(part):
                continue
            head = part.head()
            if head is None:
                continue
            heapq.heappop(part.heap)
            part.running += 1
            part.turn = next(self._turns)
            self._offer(part, part.head())
            return head
        return None

    def can_pop(self) -> bool:
        """True when `pop` would return a ticket."""
        ready = self._ready
        while ready:
            _, _, _, version, part = ready[0]
            if version == part.version and self._may_start(part) and part.head() is not None:
                return True
            heapq.heappop(ready)
        return False

    def release(self, key: Hashable) -> bool:
        """An execution of partition `key` ended: its slot is free.

        Returns:
            True when a ticket of that partition waits and may start now.
        """
        part = self._partitions.get(key)
        if part is None:
            return False
        part.running -= 1
        head = part.head() if part.heap else None
        if head is None:
            if part.running <= 0:
                del self._partitions[key]  # many keys come and go: keep only the busy ones
            return False
        if not self._may_start(part):
            return False
        self._offer(part, head)
        return True

    def running(self, key: Hashable) -> int:
        """How many executions of partition `key` run."""
        part = self._partitions.get(key)
        return part.running if part is not None else 0

    def waiting(self) -> Iterator[T]:
        """The live tickets waiting, in no particular order."""
        for part in self._partitions.values():
            for _, _, ticket in part.heap:
                if ticket.live:
                    yield ticket

    def refresh(self, key: Hashable) -> None:
        """A ticket of partition `key` died (cancelled): re-offer the partition under its new head."""
        part = self._partitions.get(key)
        if part is not None:
            head = part.head()
            self._offer(part, head)
            if part.running <= 0 and head is None:
                del self._partitions[key]
