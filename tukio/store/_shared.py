"""`LeasedStore`: what a store offers to be shared by several nodes, as a typed interface.

`tukio.cluster` drives the ownership protocol through these calls alone
(no probing of what a store can do): `SQLiteStore` and `PostgresStore`
implement it, each in its own SQL.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from tukio.policy import Decision, OverrunPolicy
    from tukio.store._lease import Beat
    from tukio.store.base import ExecutionInfo, ExecutionRecord, Serializer

__all__ = ["LeasedStore"]


@runtime_checkable
class LeasedStore(Protocol):
    """What a store offers to be shared by several nodes (`SQLiteStore`, `PostgresStore`).

    Beside the calls, two capabilities: `shares_events` (data one node
    receives reaches the listening tasks of the others) and `event_poll`
    (None: the store wakes the nodes up when an event or a cancel request
    comes, PostgreSQL's LISTEN; else the seconds between two reads, SQLite).
    """

    node: str | None
    on_fenced: Callable[[list[str]], None] | None
    ephemeral: bool
    serializer: Serializer
    shares_events: bool
    event_poll: float | None

    def attach(self, node: str | None = None, *, lease: float = 5.0) -> str:
        """Name the node this store writes for."""

    def join(self) -> int:
        """Start a new epoch of the node and take its unfinished executions back; return the epoch."""

    def heartbeat(self) -> Beat:
        """Renew the node's lease; say whether it had expired or the node was replaced."""

    def owned(self) -> list[ExecutionInfo]:
        """The unfinished executions the node owns."""

    def claim(
        self, template_ids: Iterable[str], *, limit: int = 100, versions: Collection[str] | None = None
    ) -> list[ExecutionInfo]:
        """Take over unfinished executions of dead nodes (of `versions` only, or of no version, when given)."""

    def lost(self, exec_ids: Iterable[str]) -> list[str]:
        """Those of `exec_ids` the node no longer owns."""

    def leave(self) -> None:
        """End the node's lease now."""

    def lease_expired(self) -> bool:
        """True when the node's lease may have run out by its own clock (see `tukio.store._lease`)."""

    def publish(self, data: Any, topic: str | None) -> int:
        """Keep an event for the other nodes; return its id."""

    def event_cursor(self) -> int:
        """The id of the last event published so far."""

    def events_after(self, cursor: int, *, everyone: bool = False) -> list[tuple[int, str | None, str | None, Any]]:
        """Events other nodes (with `everyone`, every node) published after `cursor`: ``(id, origin, topic, data)``."""

    def prune_events(self, older_than: float) -> int:
        """Delete old events."""

    def listen(self, wake: Callable[[], None]) -> bool:
        """Call `wake` whenever an event is published."""

    def admit(self, policy: OverrunPolicy, begin: ExecutionRecord, here: Collection[str]) -> tuple[Decision, list[str]]:
        """Apply an overrun policy across the nodes; unless it skips, record the begin (see `tukio.store._gate`)."""

    def admit_soon(
        self, policy: OverrunPolicy, begin: ExecutionRecord, here: Collection[str]
    ) -> concurrent.futures.Future[tuple[Decision, list[str]]] | None:
        """Start `admit` without a thread of the caller's; None when the store cannot (then call `admit`)."""

    def listen_cancels(self, wake: Callable[[], None]) -> bool:
        """Call `wake` whenever an admission asks some node to cancel executions (when `event_poll` is None)."""

    def stranded(self, template_ids: Iterable[str], *, versions: Collection[str] | None = None) -> list[ExecutionInfo]:
        """Unfinished executions of dead nodes this node cannot take: their template is not among
        `template_ids`, or (when `versions` is given) their version is not among `versions`."""

    def cancel_requests(self) -> list[str]:
        """Settle the cancel requests no live node will act on; return this node's."""

    def mark_cancelled(self, exec_ids: Iterable[str]) -> None:
        """Record unfinished executions of this node as cancelled."""

    def unfinished_among(self, exec_ids: Iterable[str]) -> list[str]:
        """Those of `exec_ids` that have not ended."""

    def unlock(self, exec_ids: Iterable[str]) -> None:
        """Record that executions of this node unlocked."""

    def prune_nodes(self, grace: float) -> list[str]:
        """Delete dead nodes with a default name that own nothing unfinished."""
