"""Leases of the nodes sharing a journal: what a heartbeat says, and the clocks leases are read on.

A lease is a deadline on a clock every node reads alike, and that does not
jump:

- PostgreSQL: the server's clock (``now()``). Every node compares leases
  on the one clock of the server, so a node whose own clock is off (or
  steps, under NTP) neither takes others' work early nor looks dead.
- SQLite: the processes sharing a file run on one host; they read
  `lease_clock`, the kernel's boot-time clock (``CLOCK_BOOTTIME`` on Linux,
  else ``CLOCK_MONOTONIC``). It is the same in every process of the host,
  it never steps when the wall clock is set, and it goes on while the
  machine sleeps (a lease runs out during a suspend, as it would on a
  server). ``time.time()`` is never used for a lease.

A node also keeps its own deadline on the same local clock (the store's
`lease_expired`): from the moment it sent the last heartbeat that found its
lease running, the lease less `LEASE_MARGIN` of it. While it holds, the
node knows it owns its executions without asking; past it, it asks the
store before it starts what it may have lost, and after each commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from tukio.store.base import attach_name

__all__ = ["LEASE_MARGIN", "Beat", "Clock", "NodeLease", "lease_clock"]

#: What a heartbeat found: the lease was running, had expired, or the node was replaced.
Beat = Literal["alive", "late", "replaced"]
#: A clock read for leases: seconds, never going back.
Clock = Callable[[], float]
#: Part of the lease a node does not count on for itself (time for a body to start, clock drift).
LEASE_MARGIN = 0.2

_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def lease_clock() -> float:
    """Seconds on the host's boot-time clock (monotonic where the platform has no boot time).

    The same value in every process of the host at one instant, unlike
    ``time.monotonic()`` on some platforms, and unmoved by changes of the
    wall clock.
    """
    if _BOOTTIME is not None:
        return time.clock_gettime(_BOOTTIME)
    return time.monotonic()  # pragma: no cover - Linux has CLOCK_BOOTTIME


class NodeLease:
    """The node a shared store writes for, and its own lease deadline: a part of both shared stores.

    Args:
        clock: the local clock of the node's own deadline (`lease_clock`).
    """

    def __init__(self, clock: Clock) -> None:
        #: Called with the ids of executions whose writes were refused (from the thread or loop that wrote).
        self.on_fenced: Callable[[list[str]], None] | None = None
        self.node: str | None = None
        self.lease = 5.0
        self.epoch: int | None = None
        #: The node's name is unique to one engine (`default_node_name`): once dead, its row may be pruned.
        self.ephemeral = False
        #: The clock of the node's own deadline (on SQLite, of the leases too).
        self.clock = clock
        self._lease_until = -float("inf")  # on `clock`

    def attach(self, node: str | None = None, *, lease: float = 5.0) -> str:
        """Name the node this store writes for, before it joins.

        From then on, every execution written carries its owner (the node
        and its epoch), and writes for executions another node (or a newer
        epoch of this one) owns are refused and given to `on_fenced`.

        Args:
            node: the node's name (a new unique id when None).
            lease: seconds a node stays alive without a heartbeat.

        Returns:
            The node's name.

        Raises:
            ValueError: `lease` is not positive, or the node name is empty.
            RuntimeError: another node is already attached to this store.
        """
        name = attach_name(self, self.node, node, lease)
        self.node, self.lease = name, lease
        return name

    def lease_expired(self) -> bool:
        """True when this node's lease may have run out, by its own clock.

        The deadline is the moment the last heartbeat that found the lease
        running was sent (or the node joined), plus the lease less
        `LEASE_MARGIN` of it; a heartbeat that found it expired ("late")
        leaves it lapsed.
        """
        return self.epoch is not None and self.clock() > self._lease_until

    def _renewed(self, sent: float) -> None:
        """A heartbeat sent at `sent` (on `clock`) found the lease running, or the node joined then."""
        self._lease_until = sent + self.lease * (1 - LEASE_MARGIN)
