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

__all__ = ["LEASE_MARGIN", "Beat", "Clock", "lease_clock"]

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
