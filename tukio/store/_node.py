"""The node's side of the ownership protocol, once for both SQL stores.

`OwningNode` is what a store attached to a node does with the steps of
`tukio.store._ownsql`: join, renew its lease, take over the work of dead
nodes, find what it lost, act on cancel requests. A store supplies how a
step runs (`_own`: on which connection, in a transaction or not) and, where
it has one, its own signal of a node's life (SQLite's lock file, through
`_joining_as` and `_beaten`).
"""

from __future__ import annotations

import abc
import functools
import logging
import threading
from collections.abc import Callable, Collection, Iterable
from typing import Any

from tukio._report import iso_now
from tukio.store import _ownsql as own
from tukio.store._lease import Beat, Clock, NodeLease
from tukio.store._ownsql import Owning, Step
from tukio.store.base import ExecutionInfo

__all__ = ["OwningNode"]

log = logging.getLogger(__name__)

#: A claim that only looks whether there is anything to claim.
_probe = functools.partial(own.claim, probe=True)


class OwningNode(NodeLease):
    """The ownership protocol as a node runs it on a SQL store (a part of `SQLiteStore` and `PostgresStore`).

    Args:
        clock: the local clock of the node's own deadline (see `NodeLease`).
    """

    #: How the store's database spells the protocol.
    _owning: Owning

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self._joining = threading.Lock()  # one join at a time (the heartbeat and a first write may race)

    @abc.abstractmethod
    def _own(self, step: Callable[..., Step], *args: Any, write: bool = False) -> Any:
        """Run ``step(self._owning, *args)`` and return its result; with `write`, atomically."""

    def _joining_as(self, node: str) -> None:
        """Called before the node joins (SQLite takes the node's lock file)."""

    def _beaten(self, node: str, beat: Beat) -> None:
        """Called after each heartbeat with what it found."""

    def _joined(self, node: str, epoch: int) -> None:
        """Called once the node joined, under its new epoch."""

    def join(self) -> int:
        """Start a new epoch of the attached node and take its unfinished executions back.

        Executions the node owned under an earlier epoch (a previous run of
        a process with the same name) are now owned under the new one, so a
        leftover process of that name is fenced. Writes join by themselves
        when the node has not joined yet.

        Returns:
            The node's new epoch.

        Raises:
            RuntimeError: no node is attached.
        """
        node = self.node
        if node is None:
            raise RuntimeError(f"{self!r}: no node attached (see {type(self).__name__}.attach)")
        with self._joining:
            return self._join(node)

    def _ensure_joined(self) -> None:
        with self._joining:
            if self.node is not None and self.epoch is None:
                self._join(self.node)

    def _join(self, node: str) -> int:
        self._joining_as(node)
        began = self.clock()
        epoch, taken = self._own(own.join, node, self.lease, self.ephemeral, write=True)
        # Published once committed: a call that reads the epoch meanwhile (an admission, on another
        # connection) would not find the node's row yet, and take the node for replaced.
        self._renewed(began)
        self._joined(node, epoch)
        self.epoch = epoch
        name = type(self).__name__
        log.info("%s: node %s joined (epoch %d), owning %d unfinished execution(s)", name, node, epoch, taken)
        return int(epoch)

    def _attached(self) -> str:
        """The node's name, once it joined.

        Raises:
            RuntimeError: no node is attached.
        """
        if self.node is None:
            raise RuntimeError(f"{self!r}: no node attached (see {type(self).__name__}.attach)")
        if self.epoch is None:
            self._ensure_joined()  # once: the heartbeat may be joining at the same moment
        return self.node

    def _epoch(self) -> int:
        """The node's epoch (it joined: see `_attached`)."""
        assert self.epoch is not None
        return self.epoch

    def heartbeat(self) -> Beat:
        """Renew the node's lease.

        Returns:
            "alive" when the lease was running; "late" when it had expired
            (other nodes may have taken executions over: ask `lost`);
            "replaced" when a newer epoch of the node exists (restarted
            elsewhere): every write of this one is refused.

        Raises:
            RuntimeError: no node is attached.
        """
        node = self._attached()
        began = self.clock()
        beat: Beat = self._own(own.heartbeat, node, self._epoch(), self.lease, write=True)
        self._beaten(node, beat)
        if beat == "alive":  # (late: lapsed until a heartbeat finds it running, once the node looked what it lost)
            self._renewed(began)
        return beat

    def owned(self) -> list[ExecutionInfo]:
        """List the unfinished executions this node (and epoch) owns, oldest first."""
        node = self._attached()
        infos: list[ExecutionInfo] = self._own(own.owned, node, self._epoch())
        return infos

    def claim(
        self, template_ids: Iterable[str], *, limit: int = 100, versions: Collection[str] | None = None
    ) -> list[ExecutionInfo]:
        """Take over unfinished executions of dead nodes (or of no node), at most `limit`.

        A claim is atomic: each execution is taken by one node only, and
        counts as running on it from that moment (for the overrun policies).

        Args:
            template_ids: claim only executions of these templates (those this node can run).
            limit: claim at most this many.
            versions: when given, claim only executions of these template
                versions (and those journaled before versions were kept).

        Returns:
            The executions now owned by this node.

        Raises:
            RuntimeError: no node is attached.
        """
        node = self._attached()
        ids = list(template_ids)
        # A read first: most of the time (every heartbeat) nobody is dead, and nothing is locked.
        if not ids or not self._own(_probe, node, self._epoch(), ids, 1, versions):
            return []
        infos: list[ExecutionInfo] = self._own(own.claim, node, self._epoch(), ids, limit, versions, write=True)
        return infos

    def stranded(self, template_ids: Iterable[str], *, versions: Collection[str] | None = None) -> list[ExecutionInfo]:
        """The unfinished executions of dead nodes (or of no node) that `claim` leaves alone.

        Those whose template is not among `template_ids`, or (`versions`
        given) whose template version is not among `versions`: this node
        cannot run them; `recover()` lists them, with the reason, in
        `Engine.unrecovered`.
        """
        self._attached()
        infos: list[ExecutionInfo] = self._own(own.stranded, list(template_ids), versions)
        return infos

    def lost(self, exec_ids: Iterable[str]) -> list[str]:
        """Return those of `exec_ids` that this node (and epoch) no longer owns."""
        node = self._attached()
        ids = list(exec_ids)
        gone: list[str] = self._own(own.lost, node, self._epoch(), ids) if ids else []
        return gone

    def cancel_requests(self) -> list[str]:
        """Act on the cancel requests of 'abort-running' that no live node will: return this node's.

        Requests for executions that ended are dropped; executions of dead
        nodes (or of no node) that someone asked to cancel are marked
        cancelled (they are never taken over).

        Returns:
            The unfinished executions of this node that another node asked to cancel.
        """
        node = self._attached()
        if not self._own(own.pending_cancels):
            return []  # every heartbeat: almost always nothing to do
        mine, settled = self._own(own.cancel_requests, node, self._epoch(), iso_now(), write=True)
        if settled:
            log.warning("%s: %d execution(s) of dead nodes cancelled on request", type(self).__name__, settled)
        return list(mine)

    def mark_cancelled(self, exec_ids: Iterable[str]) -> None:
        """Record these unfinished executions of this node as cancelled (they will not run)."""
        node = self._attached()
        ids = list(exec_ids)
        if ids:
            self._own(own.mark_cancelled, node, self._epoch(), ids, iso_now(), write=True)

    def unfinished_among(self, exec_ids: Iterable[str]) -> list[str]:
        """Those of `exec_ids` that have not ended (on any node)."""
        ids = list(exec_ids)
        found: list[str] = self._own(own.unfinished_among, ids) if ids else []
        return found

    def unlock(self, exec_ids: Iterable[str]) -> None:
        """Record that these executions of this node unlocked ('skip-until-unlock' no longer skips for them)."""
        node = self._attached()
        ids = list(exec_ids)
        if ids:
            self._own(own.unlock, node, self._epoch(), ids, write=True)

    def _live(self, names: Iterable[str]) -> set[str]:
        """Those of the nodes `names` that are alive (see `Owning.alive`)."""
        found: set[str] = self._own(own.live, sorted(set(names)))
        return found
